from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from ._loss import _finish
from ..pipeline.registry import step

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_AGGREGATES = ("Bio conservation", "Batch correction", "Total")
_NOT_EMBEDDINGS = ("X_umap", "X_tsne", "X_draw_graph_fr", "X_diffmap")


def _draw_table(ax, table: pd.DataFrame) -> None:
    """scIB-style table: a dot per metric (colour and size = score), a bar per aggregate score."""
    import matplotlib.pyplot as plt

    from ..tl._integration import BATCH_METRICS, BIO_METRICS

    metrics = [m for m in (*BIO_METRICS, *BATCH_METRICS) if m in table.columns]
    columns = metrics + [c for c in _AGGREGATES if c in table.columns]
    table = table.sort_values("Total", ascending=True) if "Total" in table.columns else table
    cmap = plt.get_cmap("viridis")
    for y, (name, row) in enumerate(table.iterrows()):
        for x, col in enumerate(columns):
            value = float(row[col])
            if not np.isfinite(value):
                ax.text(x, y, "n/a", ha="center", va="center", fontsize=7, color="0.5")
                continue
            if col in _AGGREGATES:
                ax.barh(y, 0.85 * max(value, 0.0), left=x - 0.42, height=0.5, color=cmap(np.clip(value, 0, 1)))
                ax.text(x - 0.4, y + 0.38, f"{value:.2f}", ha="left", va="center", fontsize=7)
            else:
                ax.scatter(x, y, s=80 + 420 * np.clip(value, 0, 1), color=cmap(np.clip(value, 0, 1)),
                           edgecolor="0.3", linewidth=0.4)
                ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(table)), list(table.index), fontsize=8)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-0.6, len(table) - 0.4)
    n_bio = sum(m in BIO_METRICS for m in metrics)
    for x in (n_bio - 0.5, len(metrics) - 0.5):
        ax.axvline(x, color="0.7", linewidth=0.8)
    ax.set_title("scIB metrics: bio conservation | batch correction | aggregate (0.6 bio + 0.4 batch)",
                 fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _umap(adata: AnnData, key: str, n_neighbors: int, seed: int) -> np.ndarray:
    import scanpy as sc

    tmp = AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["X_emb"] = np.asarray(adata.obsm[key], dtype=np.float32)
    sc.pp.neighbors(tmp, use_rep="X_emb", n_neighbors=min(n_neighbors, adata.n_obs - 1), random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    return tmp.obsm["X_umap"]


def _scatter(ax, xy: np.ndarray, values: pd.Series, title: str, legend: bool) -> None:
    import matplotlib.pyplot as plt

    cats = pd.Categorical(values.astype(str))
    colors = plt.get_cmap("tab20")(np.arange(len(cats.categories)) % 20)
    order = np.random.default_rng(0).permutation(len(xy))  # no batch drawn wholly on top
    ax.scatter(xy[order, 0], xy[order, 1], s=max(1.0, 3000 / len(xy)), c=colors[cats.codes[order]],
               linewidth=0, rasterized=True)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, markersize=4) for c in colors]
        ax.legend(handles, list(cats.categories), fontsize=6, frameon=False, loc="center left",
                  bbox_to_anchor=(1.0, 0.5))


@step("scnapse.pl.integration")
def integration(
    adata: AnnData,
    *,
    batch_key: str = "batch",
    labels_key: str = "cell_type",
    keys: Sequence[str] | None = None,
    metrics_key: str = "integration_metrics",
    umap: bool = True,
    n_neighbors: int = 15,
    seed: int = 0,
    save: str | None = None,
    show: bool | None = None,
) -> Figure:
    """How well embeddings mix batches and keep cell types apart: the scIB table and UMAPs.

    The top panel is the scIB-style table of :func:`scnapse.tl.integration_metrics` (a dot per
    metric, coloured and sized by its score; bars for bio conservation, batch correction and the
    total), embeddings sorted by total. Below it, for each embedding, a UMAP coloured by batch and
    one coloured by label (each UMAP computed on that embedding's own neighbour graph).

    Parameters
    ----------
    adata
        Annotated data with the embeddings in ``obsm``.
    batch_key, labels_key
        ``obs`` columns of the batches and the cell-type labels.
    keys
        Embeddings to show; ``None``: those of the table in ``uns[metrics_key]``, or, when there is no
        table yet, every ``obsm`` embedding except 2-D layouts (UMAP, t-SNE).
    metrics_key
        ``uns`` key of the table; when it is missing (or lacks one of ``keys``)
        :func:`scnapse.tl.integration_metrics` is run first and writes it there.
    umap
        Draw the UMAP rows (``False``: the table only).
    n_neighbors, seed
        Neighbours and seed of the UMAPs.
    save, show
        Save the figure to this file; show it.

    Returns
    -------
    Figure
        The matplotlib ``Figure``; the table drawn is in ``fig.integration_metrics``.
    """
    import matplotlib.pyplot as plt

    for col, what in ((batch_key, "batch_key"), (labels_key, "labels_key")):
        if col not in adata.obs.columns:
            raise KeyError(f"{what}={col!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    table = adata.uns.get(metrics_key)
    if keys is None:
        keys = (list(table.index) if isinstance(table, pd.DataFrame)
                else [k for k in adata.obsm if k not in _NOT_EMBEDDINGS and np.ndim(adata.obsm[k]) == 2])
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("No embedding to show: pass keys=[...] (obsm keys) or run sn.tl.integration_metrics.")
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"{missing} not in adata.obsm (available: {list(adata.obsm.keys())}).")
    if not isinstance(table, pd.DataFrame) or not set(keys) <= set(table.index):
        from ..tl._integration import integration_metrics

        table = integration_metrics(adata, keys=keys, batch_key=batch_key, labels_key=labels_key, seed=seed,
                                    key_added=metrics_key)
    table = table.loc[keys]
    n = len(keys)
    ncols = max(n, 2)
    fig = plt.figure(figsize=(max(9.0, 2.6 * ncols), 0.45 * n + 3.2 + (5.0 if umap else 0)))
    grid = fig.add_gridspec(3 if umap else 1, ncols, height_ratios=[0.45 * n + 2.2, 2.4, 2.4][: 3 if umap else 1],
                            hspace=0.45)
    _draw_table(fig.add_subplot(grid[0, :]), table)
    if umap:
        for j, key in enumerate(keys):
            xy = _umap(adata, key, n_neighbors, seed)
            last = j == n - 1
            _scatter(fig.add_subplot(grid[1, j]), xy, adata.obs[batch_key], f"{key}: {batch_key}", last)
            _scatter(fig.add_subplot(grid[2, j]), xy, adata.obs[labels_key], f"{key}: {labels_key}", last)
    fig.integration_metrics = table
    _finish(fig, save, show)
    return fig
