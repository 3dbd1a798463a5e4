"""Per-batch centring of a classifier's input: each batch of cells on its own per-gene mean
(optionally its own per-gene standard deviation), at training and at prediction alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

#: a per-batch standardised value is clipped to ±this (as ``sc.pp.scale``'s ``max_value``)
CLIP = 10.0


def batch_codes(obs: pd.DataFrame, batch_key: str, *, what: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes and category names of ``obs[batch_key]``; clear errors for a missing
    column, missing values and a batch of a single cell."""
    if batch_key not in obs.columns:
        raise KeyError(
            f"batch_key={batch_key!r} is not a column of {what}'s obs; available columns: {list(obs.columns)}."
        )
    values = obs[batch_key]
    missing = values.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{what}'s obs[{batch_key!r}] has {int(missing.sum())} missing value(s) (NaN); every cell needs "
            f"a batch. Fill them (e.g. adata.obs[{batch_key!r}] = adata.obs[{batch_key!r}]"
            ".cat.add_categories('unknown').fillna('unknown')) or drop those cells."
        )
    cat = pd.Categorical(values.astype(str) if not isinstance(values.dtype, pd.CategoricalDtype) else values)
    cat = cat.remove_unused_categories()
    codes = np.asarray(cat.codes, dtype=np.int64)
    sizes = np.bincount(codes, minlength=len(cat.categories))
    single = [str(c) for c, n in zip(cat.categories, sizes) if n < 2]
    if single:
        raise ValueError(
            f"{what}'s obs[{batch_key!r}] has batch(es) with a single cell: {single}. Each batch is centred "
            "on its own mean, which one cell cannot give; merge them into a larger batch or drop them."
        )
    return codes, [str(c) for c in cat.categories]


def batch_moments(blocks, codes: np.ndarray, n_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch mean and standard deviation (float64, batches × genes) of ``(start, x)`` blocks."""
    total = sq = None
    for start, x in blocks:
        x = x.double()
        idx = torch.as_tensor(codes[start : start + x.shape[0]], device=x.device)
        if total is None:
            total = torch.zeros(n_batches, x.shape[1], dtype=torch.float64, device=x.device)
            sq = torch.zeros_like(total)
        total.index_add_(0, idx, x)
        sq.index_add_(0, idx, x * x)
    n = torch.as_tensor(np.bincount(codes, minlength=n_batches), dtype=torch.float64,
                        device=total.device).clamp_min(1).unsqueeze(1)
    mean = total / n
    std = (sq / n - mean**2).clamp_min(0).sqrt()
    std[std < 1e-6] = 1.0  # a gene constant within a batch: centre only
    return mean, std


def apply_centring(x: torch.Tensor, idx, mean: torch.Tensor, std: torch.Tensor, scale: bool) -> torch.Tensor:
    """``x − mean[batch]`` (``/ std[batch]``, clipped to ±CLIP, with ``scale``), in float32."""
    idx = torch.as_tensor(idx, device=x.device)
    y = x - mean[idx].to(x.device, torch.float32)
    if scale:
        y = (y / std[idx].to(x.device, torch.float32)).clamp(-CLIP, CLIP)
    return y


def centre_by_batch(chunks, prep, codes: np.ndarray, n_batches: int, scale: bool) -> torch.Tensor:
    """The preprocessed training matrix (dense, float32, on the CPU), centred per batch."""
    y = torch.cat([prep(x) for x in chunks]).cpu()
    mean, std = batch_moments([(0, y)], codes, n_batches)
    return apply_centring(y, codes, mean, std, scale).contiguous()
