from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData
from ..pipeline.registry import step

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _finish(fig, save, show):
    import matplotlib.pyplot as plt

    if save:
        _save_atomic(fig, save)
    if show:
        plt.show()
    elif save:
        plt.close(fig)


def _save_atomic(fig, save) -> None:
    """``fig.savefig(save)`` through a temporary file beside it and a rename: never a half-written
    plot (a name without an extension gets matplotlib's default format's, as ``savefig`` does)."""
    import matplotlib as mpl

    from ..pipeline.writer import atomic_path

    save = os.fspath(save)
    fmt = os.path.splitext(save)[1][1:].lower()
    if not fmt:
        fmt = mpl.rcParams["savefig.format"]
        save = f"{save}.{fmt}"
    with atomic_path(save, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=fmt)


@step("scnapse.pl.loss")
def loss(adata: AnnData, key: str = "autoencoder", *, ax: Axes | None = None, log: bool = False,
         save: str | None = None, show: bool | None = None) -> Axes:
    """Train and validation loss per epoch of the step recorded in ``adata.uns[key]``.

    The best epoch (the weights that were kept) is marked.

    Parameters
    ----------
    adata
        Cells on which a training step ran.
    key
        ``uns`` key of the step (``"autoencoder"``, ``"classifier"``, ``"rnn"`` …).
    ax
        Axes to draw into; a new figure when ``None``.
    log
        Logarithmic loss axis.
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

    if key not in adata.uns or "history" not in adata.uns[key]:
        steps = [k for k, v in adata.uns.items() if isinstance(v, dict) and "history" in v]
        raise KeyError(f"adata.uns has no training history under {key!r}; steps with one: {steps}.")
    h = adata.uns[key]["history"]
    epochs = np.asarray(h["epoch"])
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, np.asarray(h["train_loss"], dtype=float), label="train")
    val = np.asarray(h["val_loss"], dtype=float)
    if np.isfinite(val).any():
        ax.plot(epochs, val, label="validation")
    best = int(h.get("best_epoch", 0))
    if best:
        ax.axvline(best, color="grey", ls="--", lw=1, label=f"best epoch ({best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{key}: loss per epoch")
    ax.legend(frameon=False)
    if fig is not None:
        _finish(fig, save, bool(show) if show is not None else False)
    return ax


@step("scnapse.pl.embedding")
def embedding(adata: AnnData, basis: str = "X_umap", *, color: str | None = None,
              save: str | None = None, show: bool | None = None, title: str | None = None) -> Axes:
    """Scatter of the first two dimensions of an embedding, coloured by an ``obs`` column.

    Uses scanpy's own ``sc.pl.embedding``.

    Parameters
    ----------
    adata
        Cells with ``obsm[basis]``.
    basis
        ``obsm`` key of the embedding.
    color
        ``obs`` column (or gene) to colour by.
    save
        Write the figure to this path (PNG, PDF, SVG … by its suffix).
    show
        Show the figure with ``plt.show()`` (default: no; the axes are returned either way).
    title
        Figure title (default: scanpy's, the column's name).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if basis not in adata.obsm:
        raise KeyError(f"{basis!r} is not in adata.obsm (available: {list(adata.obsm.keys())}).")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc.pl.embedding(adata, basis=basis, color=color, ax=ax, show=False, title=title)
    _finish(fig, save, bool(show) if show is not None else False)
    return ax
