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


#: every cost function's name, for axis labels (here and in the napari loss plot)
COST_NAMES = {"mse": "mean squared error", "bce": "binary cross-entropy", "cross_entropy": "cross-entropy",
              "kl": "Kullback–Leibler divergence", "hellinger": "Hellinger distance", "poisson": "Poisson",
              "nb": "negative binomial"}


def cost_label(params) -> str:
    """The loss axis label of a training step's recorded ``params``: the cost by name (and, for a
    variational autoencoder, its β-weighted KL term; with batches, the batch-mixing penalty),
    e.g. ``"loss: mean squared error (mse)"``."""
    cost = params.get("cost") if hasattr(params, "get") else None
    if not isinstance(cost, str) or not cost:
        return "loss"
    label = f"loss: {COST_NAMES.get(cost, cost)} ({cost})"
    if bool(params.get("variational", False)):
        label += " + β·KL"
    try:
        if float(params.get("batch_mmd", 0) or 0) > 0:
            label += " + batch MMD"
    except (TypeError, ValueError):
        pass
    return label


def _readable(key: str) -> str:
    """``"autoencoder"`` → ``"Autoencoder"``, ``"X_umap"`` → ``"UMAP"``: a key as a title word."""
    name = key[2:] if key.startswith("X_") else key
    if name.lower() in ("umap", "pca", "tsne"):
        return {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}[name.lower()]
    name = name.replace("_", " ")
    return name[:1].upper() + name[1:]


def _describe_embedding(adata: AnnData, key: str) -> str:
    """What an ``obsm`` key holds, in words: ``"the autoencoder's 16-dimensional embedding"``."""
    dims = adata.obsm[key].shape[1] if key in adata.obsm and getattr(adata.obsm[key], "ndim", 0) == 2 else None
    size = f"{dims}-dimensional " if dims else ""
    if key == "X_pca":
        return f"PCA ({dims} components)" if dims else "PCA"
    for k, v in adata.uns.items():  # a scnapse step that wrote it records obsm_key
        if isinstance(v, dict) and v.get("obsm_key") == key:
            return f"the {_readable(k).lower()}'s {size}embedding ({key})"
    return f"{key}"


def _embedding_subtitle(adata: AnnData, basis: str, color: str | None) -> list[str]:
    """What the plotted embedding is built on and, when ``compare_embeddings`` scored it against
    the colour's labels, how it compares."""
    import pandas as pd

    lines = []
    params = adata.uns.get("neighbors", {}).get("params", {}) if basis in ("X_umap", "X_tsne") else {}
    rep = params.get("use_rep") if hasattr(params, "get") else None
    if basis in ("X_umap", "X_tsne") and isinstance(rep, str):
        lines.append(f"{_readable(basis)} of {_describe_embedding(adata, rep)}")
    elif basis not in ("X_umap", "X_tsne"):
        rep = basis
        lines.append(f"first two dimensions of {_describe_embedding(adata, basis)}")
    table = adata.uns.get("embedding_comparison")
    if isinstance(table, pd.DataFrame) and isinstance(rep, str) and rep in table.index and color:
        col = next((c for c in table.columns if str(c).startswith("knn") and str(c).endswith("accuracy")), None)
        if col is not None:
            others = ", ".join(f"{_readable(i) if i == 'X_pca' else i} {table.loc[i, col]:.2f}"
                               for i in table.index if i != rep)
            k = "".join(ch for ch in str(col) if ch.isdigit()) or "k"
            vs = f" (vs {others})" if others else ""
            lines.append(f"{k}-NN accuracy of {color}: {table.loc[rep, col]:.2f}{vs}")
    return lines


@step("scnapse.pl.loss")
def loss(adata: AnnData, key: str = "autoencoder", *, ax: Axes | None = None, log: bool = False,
         save: str | None = None, show: bool | None = None) -> Axes:
    """Train and validation loss per epoch of the step recorded in ``adata.uns[key]``.

    The best epoch (the weights that were kept) is marked. The validation loss of the model
    before training, where it was measured, is drawn at epoch 0; a best epoch 0 means no epoch
    beat that start (e.g. a ``linear_init`` path's classical solution), which was kept.

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
    start = h.get("start_val_loss")
    start = float(start) if start is not None and np.isfinite(float(start)) else None
    if start is not None:  # "epoch 0": the model as built, before training
        epochs_val, val = np.concatenate([[0], epochs]), np.concatenate([[start], val])
    else:
        epochs_val = epochs
    if np.isfinite(val).any():
        ax.plot(epochs_val, val, label="validation")
    best = int(h.get("best_epoch", 0))
    if best or start is not None:
        what = f"best epoch ({best})" if best else "best epoch (0: the start was kept)"
        ax.axvline(best, color="grey", ls="--", lw=1, label=what)
    ax.set_xlabel("epoch")
    ax.set_ylabel(cost_label(adata.uns[key].get("params", {})))
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{_readable(key)} training: loss per epoch")
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
        First line of the title (default: the ``color`` column's name). Below it the title says
        what the embedding is (a UMAP of which representation, read from ``uns["neighbors"]``) and,
        when :func:`scnapse.tl.compare_embeddings` scored it, its k-NN accuracy beside the others'.

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
    lines = [title or (str(color) if color else _readable(basis))] + _embedding_subtitle(adata, basis, color)
    ax.set_title(lines[0] + "".join(f"\n{ln}" for ln in lines[1:]), fontsize=10)
    ax.set_xlabel(f"{_readable(basis)} 1")
    ax.set_ylabel(f"{_readable(basis)} 2")
    _finish(fig, save, bool(show) if show is not None else False)
    return ax
