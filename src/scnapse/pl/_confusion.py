from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from ._loss import _finish
from ..pipeline.registry import step

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@step("scnapse.pl.confusion_matrix")
def confusion_matrix(
    adata: AnnData,
    true_key: str,
    pred_key: str,
    *,
    normalize: bool = True,
    ax: Axes | None = None,
    cmap: str = "Blues",
    annotate: bool | None = None,
    save: str | None = None,
    show: bool | None = None,
) -> Axes:
    """Heat map of true labels (rows, ``obs[true_key]``) against predicted ones (columns,
    ``obs[pred_key]``, e.g. written by :func:`scnapse.tl.annotate`, ``"Unassigned"`` included).

    Parameters
    ----------
    adata
        Annotated cells.
    true_key, pred_key
        ``obs`` columns of the true and predicted labels. Cells missing either are left out.
    normalize
        Show the fraction of each true class (rows sum to 1) rather than cell counts.
    ax
        Draw into this matplotlib ``Axes``.
    annotate
        Write the value in each cell; ``None``: when there are at most 20 classes.
    save, show
        Save the figure to this file; show it.

    Returns
    -------
    Axes
        The matplotlib ``Axes``; the table itself is in ``ax.confusion`` (a DataFrame of counts).
    """
    import matplotlib.pyplot as plt

    for key in (true_key, pred_key):
        if key not in adata.obs.columns:
            raise KeyError(f"{key!r} is not a column of adata.obs; available columns: {list(adata.obs.columns)}.")
    true, pred = adata.obs[true_key], adata.obs[pred_key]
    keep = (~true.isna() & ~pred.isna()).to_numpy()
    if not keep.any():
        raise ValueError(f"No cell has both a {true_key!r} and a {pred_key!r} label.")

    def order(col: pd.Series) -> list[str]:
        if isinstance(col.dtype, pd.CategoricalDtype):
            used = set(col[keep].astype(str))
            return [str(c) for c in col.cat.categories if str(c) in used]
        return sorted(set(col[keep].astype(str)))

    rows, cols = order(true), order(pred)
    # predicted classes line up with the true ones; extra columns (e.g. Unassigned) go last
    cols = [c for c in rows if c in cols] + [c for c in cols if c not in rows]
    table = pd.crosstab(true[keep].astype(str), pred[keep].astype(str)).reindex(index=rows, columns=cols, fill_value=0)
    values = table.to_numpy(dtype=float)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(cols) + 2, 1.0 + 0.45 * len(rows) + 1))
    im = ax.imshow(values, cmap=cmap, vmin=0, vmax=1 if normalize else None, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(f"predicted ({pred_key})")
    ax.set_ylabel(f"true ({true_key})")
    if annotate is None:
        annotate = max(len(rows), len(cols)) <= 20
    if annotate:
        top = values.max() or 1
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = values[i, j]
                if v:
                    ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                            fontsize=7, color="white" if v > 0.6 * top else "black")
    acc = float(np.trace(table.reindex(columns=rows, fill_value=0).to_numpy())) / max(int(table.to_numpy().sum()), 1)
    ax.set_title(f"accuracy {acc:.3f} ({int(keep.sum())} cells)")
    ax.figure.colorbar(im, ax=ax, fraction=0.04, label="fraction of true class" if normalize else "cells")
    ax.confusion = table
    if fig is not None:
        _finish(fig, save, bool(show) if show is not None else False)
    return ax
