"""Time-course expression (cells with a time point, optionally a subject) → sequences.

Which construction fits which task
----------------------------------
* **Per-subject sequences** (``subject_key``: donor, embryo, well, lineage barcode, clone): the
  same subject is seen at several time points, so each subject is one sequence (its mean profile
  at each time point). Classify subjects (responder or not), embed them, forecast the next time
  point of a subject. This is what recurrent models are for.
* **Pseudo-replicates** (``n_pseudo``): snapshot data where each cell is seen once (scRNA-seq kills
  the cell) and there is no subject. Each pseudo-replicate draws ``cells_per_step`` cells at every
  time point and averages them: a population trajectory with sampling noise. Fits forecasting the
  population's next time point and embedding; it does *not* follow any cell. Split cells into
  train / test *before* building pseudo-replicates, or the same cells appear on both sides.
* **Per-time-point summary** (neither): one sequence, the mean profile at each time point; to look
  at or plot, too little to train a network on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._anndata import get_matrix
from ._sequences import pack_sequences


def _feature_matrix(adata: AnnData, use_rep, genes, layer):
    if use_rep is not None:
        if use_rep not in adata.obsm:
            raise KeyError(f"use_rep={use_rep!r} is not in adata.obsm; available: {list(adata.obsm.keys())} "
                           "(run sc.pp.pca first for 'X_pca').")
        M = np.asarray(adata.obsm[use_rep], dtype=np.float64)
        if M.ndim != 2:
            raise ValueError(f"adata.obsm[{use_rep!r}] has shape {M.shape}; use_rep needs (cells, dimensions).")
        return M, [f"{use_rep}_{j + 1}" for j in range(M.shape[1])]
    X = get_matrix(adata, layer)
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(f"genes {missing[:5]} are not in adata.var_names.")
        cols = adata.var_names.get_indexer(genes)
        X, names = X[:, cols], genes
    else:
        names = list(map(str, adata.var_names))
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    return X.astype(np.float64), names


def from_timecourse(
    adata: AnnData,
    *,
    time_key: str,
    subject_key: str | None = None,
    n_pseudo: int | None = None,
    cells_per_step: int = 10,
    use_rep: str | None = None,
    genes: list[str] | None = None,
    layer: str | None = None,
    seed: int = 0,
    key: str = "sequence",
) -> AnnData:
    """Sequences from time-course expression; see the module docstring for which mode fits.

    Parameters
    ----------
    adata
        Cells × genes with ``obs[time_key]`` (numbers: hours, days, …). Not modified.
    time_key
        The time column. Steps are the sorted distinct time points.
    subject_key
        One sequence per value of this column (donor, embryo, clone, …); a subject's step is the
        mean of its cells at that time point, and time points where it has no cell are gaps.
    n_pseudo
        Without ``subject_key``: build this many pseudo-replicates of ``cells_per_step`` cells drawn
        (without replacement, from ``seed``) at every time point. ``None`` and no subject: one
        sequence of per-time-point means.
    use_rep, genes, layer
        Features of each step: ``obsm[use_rep]`` (e.g. ``"X_pca"``), else the ``genes`` listed (or
        all) of ``X`` / ``layers[layer]``.
    seed
        Seed of the pseudo-replicate draws.
    key
        ``obsm`` key to write.

    Returns
    -------
    AnnData
        A sequence AnnData (see :mod:`scnapse.ts`): ``obsm[key]`` (n, T, F), ``obs["length"]``,
        ``obsm[key + "_time"]`` and ``obs["n_cells"]`` (cells averaged, over all steps).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if time_key not in adata.obs.columns:
        raise KeyError(f"time_key={time_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    t = pd.to_numeric(pd.Series(np.asarray(adata.obs[time_key]), index=adata.obs_names), errors="coerce")
    if t.isna().any():
        raise ValueError(f"adata.obs[{time_key!r}] must hold numbers (hours, days…); {int(t.isna().sum())} "
                         "value(s) are missing or not numeric.")
    M, names = _feature_matrix(adata, use_rep, genes, layer)
    if not np.isfinite(M).all():
        raise ValueError("The features hold NaN or infinite values; impute or drop them first.")
    tv = t.to_numpy(dtype=np.float64)
    times = np.unique(tv)
    seqs, tlist, rows = [], [], []
    if subject_key is not None:
        if subject_key not in adata.obs.columns:
            raise KeyError(f"subject_key={subject_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
        subj = pd.Series(np.asarray(adata.obs[subject_key]))
        if subj.isna().any():
            raise ValueError(f"adata.obs[{subject_key!r}] has {int(subj.isna().sum())} missing value(s).")
        for s in pd.unique(subj):
            member = (subj == s).to_numpy()
            ts = np.unique(tv[member])
            seqs.append(np.stack([M[member & (tv == x)].mean(axis=0) for x in ts]).astype(np.float32))
            tlist.append(ts)
            rows.append({subject_key: s, "n_cells": int(member.sum())})
        obs = pd.DataFrame(rows)
        obs.index = pd.Index([str(s) for s in obs[subject_key]])
        mode = "subject"
    elif n_pseudo is not None:
        n_pseudo, cells_per_step = int(n_pseudo), int(cells_per_step)
        if n_pseudo < 1 or cells_per_step < 1:
            raise ValueError("n_pseudo and cells_per_step must be positive integers.")
        per_time = [np.flatnonzero(tv == x) for x in times]
        small = [(x, len(p)) for x, p in zip(times, per_time) if len(p) < cells_per_step]
        if small:
            raise ValueError(f"cells_per_step={cells_per_step} but some time points have fewer cells: "
                             f"{small}. Lower cells_per_step.")
        rng = np.random.default_rng(seed)
        for r in range(n_pseudo):
            steps = [M[rng.choice(p, cells_per_step, replace=False)].mean(axis=0) for p in per_time]
            seqs.append(np.stack(steps).astype(np.float32))
            tlist.append(times)
            rows.append({"replicate": r, "n_cells": cells_per_step * len(times)})
        obs = pd.DataFrame(rows)
        obs.index = pd.Index([f"pseudo_{r}" for r in range(n_pseudo)])
        mode = "pseudo_replicates"
    else:
        seqs = [np.stack([M[tv == x].mean(axis=0) for x in times]).astype(np.float32)]
        tlist = [times]
        obs = pd.DataFrame({"n_cells": [adata.n_obs]}, index=["all"])
        mode = "summary"
    info = {"source": "timecourse", "mode": mode, "time_key": time_key, "subject_key": subject_key,
            "use_rep": use_rep, "layer": layer, "seed": seed, "cells_per_step": cells_per_step,
            "time_points": times.tolist()}
    return pack_sequences(seqs, tlist, names, obs, key=key, info={k: ("None" if v is None else v) for k, v in info.items()})
