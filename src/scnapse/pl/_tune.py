from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from ._loss import _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def tune(adata: AnnData, key: str = "tune", *, ax: Axes | None = None, save: str | None = None,
         show: bool | None = None) -> Axes:
    """Each trial's score and the best so far, from :func:`scnapse.tl.tune`'s ``uns[key]``.

    Parameters
    ----------
    adata
        Cells on which ``sn.tl.tune`` ran.
    key
        ``uns`` key of the search.
    ax
        Axes to draw into; a new figure when ``None``.
    save
        Write the figure to this path.
    show
        Show the figure with ``plt.show()`` (default: no; the axes are returned either way).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.
    """
    import matplotlib.pyplot as plt

    if key not in adata.uns or "trials" not in adata.uns[key]:
        raise KeyError(f"adata.uns has no tuning result under {key!r}; run sn.tl.tune first.")
    rec = adata.uns[key]
    table, metric = rec["trials"], rec["metric"]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    trials = np.asarray(table.index) + 1
    ax.scatter(trials, table[metric], s=14, color="grey", label="trial")
    ax.plot(trials, table["best_so_far"], color="C0", label="best so far")
    pruned = table["state"] == "pruned"
    if pruned.any():
        ax.scatter(trials[pruned.to_numpy()], np.full(pruned.sum(), np.nanmin(table["best_so_far"])),
                   marker="x", color="C3", s=14, label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"tuning ({rec['sampler']}): {rec['step']}")
    ax.legend(frameon=False)
    if fig is not None:
        _finish(fig, save, bool(show) if show is not None else False)
    return ax
