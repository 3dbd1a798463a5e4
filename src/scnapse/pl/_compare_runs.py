from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from ..pipeline.registry import step
from ._loss import _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _record(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or "table" not in adata.uns[key]:
        raise KeyError(f"adata.uns has no compared runs under {key!r}; run sn.tl.compare_runs first.")
    return adata.uns[key]


def _sweep_key(rec: dict) -> str | None:
    """The one varied numeric key with several values (an lr / l2 sweep), else ``None``."""
    vary = dict(rec.get("vary", {}))
    if len(vary) != 1:
        return None
    key, values = next(iter(vary.items()))
    values = list(values)
    if len(values) > 1 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return key
    return None


def loss_curves(adata: AnnData, key: str = "compare_runs", *, ax: Axes | None = None, log: bool = False) -> Axes:
    """Each run's train (dashed) and validation (solid) loss per epoch on one ``Axes``; returns it."""
    import matplotlib.pyplot as plt

    rec = _record(adata, key)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for i, (label, hist) in enumerate(dict(rec["histories"]).items()):
        color = f"C{i % 10}"
        train, val = np.asarray(hist["train_loss"], float), np.asarray(hist["val_loss"], float)
        ax.plot(np.arange(1, len(train) + 1), train, ls="--", color=color, lw=1)
        if len(val) and np.isfinite(val).any():
            ax.plot(np.arange(1, len(val) + 1), val, ls="-", color=color, lw=1.5, label=label)
        else:
            ax.plot([], [], ls="-", color=color, label=label)
    ax.plot([], [], ls="--", color="grey", lw=1, label="train (dashed)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{str(rec['step']).rsplit('.', 1)[-1]}: validation (solid), train (dashed)", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    return ax


@step("scnapse.pl.compare_runs")
def compare_runs(adata: AnnData, key: str = "compare_runs", *, color: str | None = None, log: bool = False,
                 embeddings: bool = True, save: str | None = None, show: bool | None = None) -> Figure:
    """Runs compared by :func:`scnapse.tl.compare_runs`: loss curves, final scores, embeddings.

    Parameters
    ----------
    adata
        The data holding ``uns[key]`` (and the runs' embeddings in ``obsm``).
    key
        Where :func:`scnapse.tl.compare_runs` wrote its record.
    color
        ``obs`` column colouring the embeddings (default: the record's ``labels_key``).
    log
        Loss axis on a log scale.
    embeddings
        Draw each run's embedding (first two dimensions) in a row below.
    save
        Write the figure to this file.
    show
        Show the figure (default: no).

    Returns
    -------
    matplotlib.figure.Figure
        The figure: loss curves overlaid (train dashed, validation solid, one colour per run) and
        the final validation loss per run as bars (held-out accuracy / macro-F1 / kNN accuracy and
        the baseline beside it where they exist). A single numeric key swept (``lr``, ``l2``…) is
        drawn as final and best validation loss against the value, on a log axis for a log sweep.
    """
    import matplotlib.pyplot as plt

    rec = _record(adata, key)
    table = rec["table"]
    keys = [k for k in rec.get("obsm_keys", []) if k in adata.obsm] if embeddings else []
    n_emb = len(keys)
    ncols = max(2, n_emb)
    fig = plt.figure(figsize=(max(9, 2.6 * ncols), 3.6 + (2.6 if n_emb else 0)), layout="constrained")
    grid = fig.add_gridspec(2 if n_emb else 1, ncols, height_ratios=[1.4, 1] if n_emb else [1])
    half = ncols // 2
    ax_loss = fig.add_subplot(grid[0, :half])
    ax_score = fig.add_subplot(grid[0, half:])
    losses = np.concatenate([np.asarray(h[c], float) for h in dict(rec["histories"]).values()
                             for c in ("train_loss", "val_loss")] or [np.ones(1)])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    wide = len(losses) > 0 and losses.max() / losses.min() > 50  # a diverging run: log axes
    loss_curves(adata, key, ax=ax_loss, log=log or wide)
    sweep = _sweep_key(rec)
    if sweep is not None:
        x = np.asarray(table[sweep], float)
        ax_score.plot(x, table["final_val_loss"], "o-", color="C0", label="final validation loss")
        ax_score.plot(x, table["best_val_loss"], "s--", color="C1", label="best validation loss")
        ax_score.plot(x, table["final_train_loss"], "^:", color="C2", label="final train loss")
        if np.all(x > 0) and (x.max() / x.min() > 20):
            ax_score.set_xscale("log")
        if log or wide:
            ax_score.set_yscale("log")
        ax_score.set_xlabel(sweep)
        ax_score.set_ylabel("loss")
        ax_score.legend(frameon=False, fontsize=7)
        ax_score.set_title(f"loss vs {sweep}", fontsize=9)
    else:
        labels = list(table.index)
        y = np.arange(len(labels))
        colors = [f"C{i % 10}" for i in range(len(labels))]
        ax_score.barh(y, table["final_val_loss"], color=colors)
        ax_score.set_yticks(y, labels, fontsize=7)
        ax_score.invert_yaxis()
        ax_score.set_xlabel("final validation loss")
        notes = []
        for col in ("accuracy", "macro_f1", "knn_accuracy"):
            if col in table:
                notes.append(col)
        for i, name in enumerate(labels):
            parts = [f"{table.loc[name, 'final_val_loss']:.4g}"]
            parts += [f"{c} {table.loc[name, c]:.3f}" for c in notes if np.isfinite(table.loc[name, c])]
            if "baseline" in table and np.isfinite(table.loc[name, "baseline"]):
                parts.append(f"{table.loc[name, 'baseline_method']} {table.loc[name, 'baseline']:.3g}")
            ax_score.text(0.01, i, "  " + " · ".join(parts), va="center", fontsize=7,
                          transform=ax_score.get_yaxis_transform(), color="white" if i < 10 else "k")
        ax_score.set_title("final scores", fontsize=9)
    if n_emb:
        color = color or rec.get("labels_key")
        values = None
        if color is not None and color in adata.obs:
            cats = adata.obs[color].astype("category")
            values = cats.cat.codes.to_numpy()
        for j, k in enumerate(keys):
            ax = fig.add_subplot(grid[1, j])
            emb = np.asarray(adata.obsm[k])
            ax.scatter(emb[:, 0], emb[:, 1], s=2, c=values if values is not None else "grey",
                       cmap="tab20" if values is not None else None)
            ax.set_title(k.split("_", 2)[-1] if k.count("_") >= 2 else k, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    _finish(fig, save, bool(show) if show is not None else False)
    return fig
