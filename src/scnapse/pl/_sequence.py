"""Plot sequences (tracks, time courses) and their forecasts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from ._loss import _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def sequences(
    adata: AnnData,
    *,
    feature: str | None = None,
    n: int = 8,
    color: str | None = None,
    forecast_key: str | None = "forecast",
    sequence_key: str = "sequence",
    length_key: str = "length",
    seed: int = 0,
    ax: Axes | None = None,
    save: str | None = None,
    show: bool | None = None,
) -> Axes:
    """Traces of ``n`` sequences (one feature) against time, with their forecasts dashed.

    Parameters
    ----------
    adata
        A sequence AnnData (:mod:`scnapse.ts`).
    feature
        Which feature to draw (default: the first).
    n
        How many sequences (drawn at random from ``seed``; all when fewer).
    color
        ``obs`` column to colour by (one colour per category); default one colour per sequence.
    forecast_key
        ``obsm`` key of forecasts (from :func:`scnapse.tl.forecast`) drawn after each sequence's
        end, spaced by the sequence's last time step; ``None`` or absent: none.
    sequence_key, length_key
        Where the sequences and their lengths are.
    seed
        Seed of the choice of sequences.
    ax, save, show
        Matplotlib ``Axes`` to draw into; file to save to; show the figure.

    Returns
    -------
    Axes
        The matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    from ..ts import get_sequences

    s = get_sequences(adata, key=sequence_key, length_key=length_key)
    feature = s.features[0] if feature is None else feature
    if feature not in s.features:
        raise KeyError(f"feature={feature!r} is not one of the sequences' features {s.features}.")
    j = s.features.index(feature)
    if color is not None and color not in adata.obs.columns:
        raise KeyError(f"color={color!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    rows = np.arange(s.n)
    if s.n > n:
        rows = np.sort(np.random.default_rng(seed).choice(s.n, n, replace=False))
    fc = None
    if forecast_key is not None and forecast_key in adata.obsm:
        fc = np.asarray(adata.obsm[forecast_key])
        feats = list(adata.uns.get(forecast_key, {}).get("features", s.features))
        fc = fc[:, :, feats.index(feature)] if feature in feats else None
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    cmap = plt.get_cmap("tab10")
    cats = list(adata.obs[color].astype(str).unique()) if color is not None else None
    for k, i in enumerate(rows):
        L = int(s.lengths[i])
        t = s.time[i, :L] if s.time is not None else np.arange(L, dtype=float)
        c = cmap(cats.index(str(adata.obs[color].iloc[i])) % 10) if cats else cmap(k % 10)
        ax.plot(t, s.x[i, :L, j], color=c, lw=1.2)
        if fc is not None:
            dt = (t[-1] - t[-2]) if L > 1 else 1.0
            tf = t[-1] + dt * np.arange(0, fc.shape[1] + 1)
            ax.plot(tf, np.concatenate([[s.x[i, L - 1, j]], fc[i]]), color=c, lw=1.2, ls="--")
    if cats:
        for q, cat in enumerate(cats):
            ax.plot([], [], color=cmap(q % 10), label=cat)
        ax.legend(frameon=False, title=color)
    ax.set_xlabel("time")
    ax.set_ylabel(feature)
    ax.set_title(f"{len(rows)} of {s.n} sequences" + (" (dashed: forecast)" if fc is not None else ""))
    if fig is not None:
        _finish(fig, save, bool(show) if show is not None else False)
    return ax
