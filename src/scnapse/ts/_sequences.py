"""The sequence AnnData: one row per track / subject, ``obsm["sequence"]`` (n, T, F) padded.

Layout written by every builder in :mod:`scnapse.ts` and read by every sequence model:

* ``obsm[key]`` — float32 array (n, T, F); sequence ``i`` is ``obsm[key][i, :obs["length"][i]]``,
  left-aligned (step 0 is the first observation); the steps after it are padding (zeros) and are
  never read by a model.
* ``obs["length"]`` — the number of real steps of each sequence (1 … T).
* ``obsm[key + "_time"]`` — (n, T) the time of each step (frame, hours, …); optional.
* ``uns[key]`` — ``{"features": names of the F features, …how it was built}``.
* ``X`` — per-sequence mean of each feature (so ``var_names`` are the features and scanpy's own
  tools work on the summary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData


@dataclass
class Sequences:
    """Sequences read from an AnnData, ready for a model: padding zeroed, NaN refused.

    Made by :func:`get_sequences`; not usually built by hand.

    Parameters
    ----------
    x
        (n, T, F) float32 values, left-aligned, zero after each sequence's length.
    lengths
        (n,) number of real steps of each sequence.
    time
        (n, T) time of each step, or ``None`` for steps 0, 1, 2, …
    features
        Names of the F features.
    """

    x: np.ndarray  # (n, T, F) float32, zeros on padding
    lengths: np.ndarray  # (n,) int64, 1..T
    time: np.ndarray | None  # (n, T) float64 or None
    features: list[str]

    @property
    def n(self) -> int:
        return self.x.shape[0]


def pack_sequences(
    seqs: list[np.ndarray], times: list[np.ndarray] | None, features: list[str], obs: pd.DataFrame,
    *, key: str = "sequence", info: dict | None = None,
) -> AnnData:
    """Build the sequence AnnData from per-sequence arrays (T_i, F) and their times (T_i,)."""
    n, F = len(seqs), len(features)
    T = max((len(s) for s in seqs), default=0)
    x = np.zeros((n, T, F), dtype=np.float32)
    tt = np.zeros((n, T), dtype=np.float64)
    summary = np.zeros((n, F), dtype=np.float32)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        summary[i] = np.asarray(s, dtype=np.float64).mean(axis=0) if len(s) else np.nan
        if times is not None:
            tt[i, : len(s)] = times[i]
    obs = obs.copy()
    obs["length"] = np.array([len(s) for s in seqs], dtype=np.int64)
    adata = AnnData(X=summary, obs=obs, var=pd.DataFrame(index=pd.Index([str(f) for f in features])))
    adata.obsm[key] = x
    if times is not None:
        adata.obsm[f"{key}_time"] = tt
    adata.uns[key] = {"features": [str(f) for f in features],
                      "padding": "zeros after obs['length'] steps (never read by the models)",
                      **(info or {})}
    return adata


def from_array(
    x: np.ndarray, *, lengths=None, time=None, features=None, obs: pd.DataFrame | None = None,
    key: str = "sequence",
) -> AnnData:
    """Wrap a padded array (n, T, F) as a sequence AnnData.

    Parameters
    ----------
    x
        Sequences, left-aligned; a 2-D array (n, T) is one feature.
    lengths
        Real steps per sequence. ``None``: trailing steps that are NaN in every feature are padding,
        the rest are real (so NaN-padded arrays work as they are).
    time
        (n, T) time of each step, or (T,) shared by all; ``None``: steps 0, 1, 2, …
    features
        Feature names (default ``feature_0`` …).
    obs
        Per-sequence annotations (n rows), e.g. labels.
    key
        ``obsm`` key to write.

    Returns
    -------
    AnnData
        One row per sequence: ``obsm[key]`` (n, T, F), ``obsm[key + "_time"]``,
        ``obs["length"]``, and ``X`` the per-sequence mean of each feature.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"x must have shape (sequences, steps, features); got {arr.shape}.")
    n, T, F = arr.shape
    if lengths is None:
        real = ~np.isnan(arr).all(axis=2)
        lengths = np.where(real.any(axis=1), T - np.argmax(real[:, ::-1], axis=1), 0)
    lengths = np.asarray(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths has shape {lengths.shape}; need one length per sequence ({n}).")
    if time is None:
        time = np.broadcast_to(np.arange(T, dtype=np.float64), (n, T))
    time = np.asarray(time, dtype=np.float64)
    if time.ndim == 1:
        time = np.broadcast_to(time, (n, T))
    if time.shape != (n, T):
        raise ValueError(f"time has shape {time.shape}; need (sequences, steps) = {(n, T)} or ({T},).")
    features = [f"feature_{j}" for j in range(F)] if features is None else [str(f) for f in features]
    if len(features) != F:
        raise ValueError(f"{len(features)} feature names for {F} features.")
    if obs is None:
        obs = pd.DataFrame(index=[str(i) for i in range(n)])
    elif len(obs) != n:
        raise ValueError(f"obs has {len(obs)} rows for {n} sequences.")
    seqs = [arr[i, : int(lengths[i])] for i in range(n)]
    times = [time[i, : int(lengths[i])] for i in range(n)]
    bad = [i for i, L in enumerate(lengths) if L < 1 or L > T]
    if bad:
        raise ValueError(f"lengths must be between 1 and {T}; sequence(s) {bad[:5]} have {lengths[bad[:5]].tolist()}.")
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    return pack_sequences(seqs, times, features, obs, key=key, info={"source": "array"})


def get_sequences(adata: AnnData, *, key: str = "sequence", length_key: str = "length") -> Sequences:
    """Read and check the sequences of a sequence AnnData (see the module docstring).

    Parameters
    ----------
    adata
        A sequence AnnData, e.g. from :func:`from_tracks` or :func:`from_array`.
    key
        ``obsm`` key of the (n, T, F) array.
    length_key
        ``obs`` column of the number of real steps.

    Returns
    -------
    Sequences
        The checked values, lengths, times and feature names.

    Raises
    ------
    KeyError, ValueError
        Naming the problem and the fix; the user's data are not modified.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"The sequences must be an AnnData (from scnapse.ts.from_tracks etc.), not {type(adata).__name__}.")
    if key not in adata.obsm:
        three_d = [k for k in adata.obsm.keys() if np.ndim(adata.obsm[k]) == 3]
        raise KeyError(
            f"adata.obsm has no {key!r}: a sequence AnnData holds obsm[{key!r}] of shape (n, T, features). "
            f"Build one with scnapse.ts.from_tracks / from_timecourse / from_array"
            + (f", or pass sequence_key= one of {three_d}." if three_d else ".")
        )
    raw = np.asarray(adata.obsm[key])
    if raw.ndim != 3:
        raise ValueError(f"adata.obsm[{key!r}] has shape {raw.shape}; sequences need 3 dimensions (n, T, features).")
    if not np.issubdtype(raw.dtype, np.number):
        raise ValueError(f"adata.obsm[{key!r}] holds {raw.dtype} values; sequences must be numbers.")
    n, T, F = raw.shape
    if n == 0 or T == 0 or F == 0:
        raise ValueError(f"adata.obsm[{key!r}] is empty (shape {raw.shape}).")
    if length_key in adata.obs.columns:
        lengths = pd.to_numeric(adata.obs[length_key], errors="coerce").to_numpy()
        if np.isnan(lengths).any() or (lengths != np.round(lengths)).any():
            raise ValueError(f"adata.obs[{length_key!r}] must hold whole numbers of steps.")
        lengths = lengths.astype(np.int64)
    else:
        real = ~np.isnan(raw.astype(np.float64)).all(axis=2)
        lengths = np.where(real.any(axis=1), T - np.argmax(real[:, ::-1], axis=1), 0).astype(np.int64)
    if (lengths < 1).any() or (lengths > T).any():
        bad = np.flatnonzero((lengths < 1) | (lengths > T))[:5]
        raise ValueError(
            f"Sequence lengths must be between 1 and {T} (the padded length); rows {bad.tolist()} have "
            f"{lengths[bad].tolist()}. Drop empty sequences (adata = adata[adata.obs[{length_key!r}] > 0])."
        )
    mask = np.arange(T)[None, :] < lengths[:, None]
    x = np.where(mask[:, :, None], raw, 0.0).astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=(1, 2)))
        raise ValueError(
            f"{len(rows)} sequence(s) hold NaN or infinite values inside their length (first: "
            f"{list(adata.obs_names[rows[:3]])}). scnapse refuses them rather than guess: build the "
            "sequences with scnapse.ts.from_tracks(..., dropna=True) to drop those time points (they "
            "become gaps), impute them, or drop those sequences."
        )
    tkey = f"{key}_time"
    time = None
    if tkey in adata.obsm:
        time = np.asarray(adata.obsm[tkey], dtype=np.float64)
        if time.shape != (n, T):
            raise ValueError(f"adata.obsm[{tkey!r}] has shape {time.shape}; it must be (n, T) = {(n, T)}.")
        time = np.where(mask, time, 0.0)
    meta = adata.uns.get(key, {})
    features = list(meta.get("features", [])) if isinstance(meta, dict) else []
    if len(features) != F:
        features = list(map(str, adata.var_names)) if adata.n_vars == F else [f"feature_{j}" for j in range(F)]
    return Sequences(x=x, lengths=lengths, time=time, features=[str(f) for f in features])


def time_steps(time: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Time since the previous step, (n, T); 0 on the first step and on padding."""
    dt = np.zeros_like(time)
    dt[:, 1:] = np.diff(time, axis=1)
    mask = np.arange(time.shape[1])[None, :] < lengths[:, None]
    dt[~mask] = 0.0
    return dt


def is_irregular(time: np.ndarray | None, lengths: np.ndarray) -> bool:
    """True when the steps are not evenly spaced (gaps in tracks, uneven sampling)."""
    if time is None:
        return False
    dt = time_steps(time, lengths)[:, 1:]
    real = (np.arange(1, time.shape[1])[None, :] < lengths[:, None])
    vals = dt[real]
    return bool(vals.size and not np.allclose(vals, vals[0]))
