"""The input transform a model learns at fit time and applies unchanged to new data."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from ..train.data import MatrixSummary


def looks_like_counts(summary: MatrixSummary) -> bool:
    """Raw counts: non-negative integers with a range no log-normalised matrix has."""
    return summary.all_integer and summary.min >= 0 and summary.max > 30


@dataclass
class Preprocessing:
    """``x → [log1p(x / Σx · target_sum)] → [(x − mean) / std, clipped to ±clip]``.

    ``log_normalize`` is for raw counts; ``scale`` standardises each gene (as ``sc.pp.scale``).
    """

    log_normalize: bool = False
    scale: bool = True
    target_sum: float = 1e4
    clip: float = 10.0
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def _log(self, x: torch.Tensor) -> torch.Tensor:
        if not self.log_normalize:
            return x
        lib = x.sum(dim=1, keepdim=True).clamp_min(1e-8)
        return torch.log1p(x / lib * self.target_sum)

    def fit(self, chunks) -> Preprocessing:
        """Learn the gene means/stds from ``chunks`` (an iterable of float32 tensors)."""
        if not self.scale:
            return self
        total = sq = None
        n = 0
        for x in chunks:
            y = self._log(x).double()
            total = y.sum(0) if total is None else total + y.sum(0)
            sq = (y * y).sum(0) if sq is None else sq + (y * y).sum(0)
            n += y.shape[0]
        mean = total / max(n, 1)
        var = (sq / max(n, 1) - mean**2).clamp_min(0)
        std = var.sqrt()
        std[std < 1e-6] = 1.0  # constant genes: centre only
        self.mean, self.std = mean.float(), std.float()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._log(x)
        if self.scale:
            y = ((y - self.mean.to(y.device)) / self.std.to(y.device)).clamp(-self.clip, self.clip)
        return y

    def block(self, block, *, sparse_out: bool = False) -> torch.Tensor:
        """Preprocess a row block (NumPy or SciPy sparse) on the CPU for inference.

        On sparse blocks the log-normalisation runs on the stored values only (``log1p(0) = 0``),
        which is where inference spends its time; with ``sparse_out`` (and no standardisation,
        which would fill in the zeros) the result stays a sparse CSR tensor. NaN/inf anywhere
        raise a ``ValueError``.
        """
        from scipy import sparse

        if sparse.issparse(block):
            block = sparse.csr_matrix(block, dtype=np.float32, copy=True)
            if not np.isfinite(block.data).all():
                raise ValueError("The data hold NaN or infinite values; remove or impute them first.")
            if self.log_normalize:
                lib = np.asarray(block.sum(axis=1)).ravel()
                scale = (self.target_sum / np.maximum(lib, 1e-8)).astype(np.float32)
                block.data *= np.repeat(scale, np.diff(block.indptr))
                np.log1p(block.data, out=block.data)
            if sparse_out and not self.scale:
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
                return torch.sparse_csr_tensor(
                    torch.from_numpy(block.indptr.astype(np.int64)), torch.from_numpy(block.indices.astype(np.int64)),
                    torch.from_numpy(block.data), size=block.shape, check_invariants=False,
                )
            x = torch.from_numpy(block.toarray())
        else:
            x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
            if not torch.isfinite(x).all():
                raise ValueError("The data hold NaN or infinite values; remove or impute them first.")
            x = self._log(x)
        if self.scale:
            x = ((x - self.mean.to(x.device)) / self.std.to(x.device)).clamp(-self.clip, self.clip)
        return x

    def describe(self) -> str:
        steps = []
        if self.log_normalize:
            steps.append(f"log1p(x / total × {self.target_sum:g})")
        if self.scale:
            steps.append(f"per-gene z-score clipped at ±{self.clip:g}")
        return " then ".join(steps) or "none"

    def to_config(self) -> dict:
        return {"log_normalize": self.log_normalize, "scale": self.scale,
                "target_sum": self.target_sum, "clip": self.clip}

    def tensors(self, prefix: str = "preprocessing.") -> dict[str, torch.Tensor]:
        if not self.scale:
            return {}
        return {prefix + "mean": self.mean, prefix + "std": self.std}

    @classmethod
    def from_state(cls, config: dict, tensors: dict, prefix: str = "preprocessing.") -> Preprocessing:
        obj = cls(**config)
        if obj.scale:
            obj.mean, obj.std = tensors[prefix + "mean"], tensors[prefix + "std"]
        return obj


def chunks_as_tensors(X, columns: np.ndarray | None = None, chunk_rows: int = 8192):
    """Float32 tensors over consecutive row blocks of any matrix, optionally only some columns."""
    from scipy import sparse

    from ..train.data import iter_row_chunks

    for _, block in iter_row_chunks(X, chunk_rows):
        if columns is not None:
            block = block[:, columns]
        dense = block.toarray() if sparse.issparse(block) else np.asarray(block)
        yield torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))


def select_columns(block, pos_present: np.ndarray, cols_present: np.ndarray, n_model: int):
    """The model's genes of a row block (model order; zeros for missing genes), staying sparse."""
    if sparse.issparse(block):
        sub = sparse.csr_matrix(block[:, pos_present])
        sub.sort_indices()
        out = sparse.csr_matrix((sub.data, cols_present[sub.indices], sub.indptr), shape=(block.shape[0], n_model))
        out.sort_indices()
        return out
    out = np.zeros((block.shape[0], n_model), dtype=np.float32)
    out[:, cols_present] = np.asarray(block)[:, pos_present]
    return out


def sparse_log_matmul(block, prep: Preprocessing, weight: torch.Tensor, device) -> torch.Tensor:
    """``prep(block) @ weight`` for a CSR block and an unscaled transform, without densifying."""
    csr = sparse.csr_matrix(block, dtype=np.float32)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    data = csr.data
    if not np.all(np.isfinite(data)):
        raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
    if prep.log_normalize:
        lib = np.maximum(np.asarray(csr.sum(axis=1), dtype=np.float32).ravel(), np.float32(1e-8))
        data = np.log1p(data / np.repeat(lib, np.diff(csr.indptr)) * np.float32(prep.target_sum))
    idx_type = np.int32 if csr.nnz < 2**31 - 1 else np.int64
    with warnings.catch_warnings():  # torch: "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        x = torch.sparse_csr_tensor(
            # int32 indices: no copy for scipy's usual CSR, and MKL's sparse product is faster
            torch.from_numpy(csr.indptr.astype(idx_type, copy=False)),
            torch.from_numpy(csr.indices.astype(idx_type, copy=False)),
            torch.from_numpy(np.asarray(data, dtype=np.float32)), size=csr.shape,
        ).to(device)
    return x @ weight
