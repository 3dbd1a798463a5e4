"""Mini-batches from dense, sparse and backed matrices, without densifying the whole matrix.

A :class:`Matrix` holds the rows once, on the training device when they are in memory (a dense
tensor, or the three arrays of a CSR matrix), and forms a dense float32 batch from a set of row
indices. A backed ``.h5ad`` matrix stays on disk and is read batch by batch in sorted row order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse


def is_backed(X) -> bool:
    """True for an on-disk matrix of a backed AnnData (h5py dataset or anndata's sparse dataset)."""
    mod = type(X).__module__
    return mod.startswith("h5py") or "sparse_dataset" in mod or type(X).__name__.endswith("SparseDataset")


def _read_rows(X, rows: np.ndarray):
    """Rows ``rows`` (sorted) of any supported matrix, as an in-memory array or sparse matrix."""
    if is_backed(X):
        # h5py wants increasing indices; contiguous runs are read as slices
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return X[int(rows[0]) : int(rows[-1]) + 1]
        return X[rows]
    return X[rows]


def iter_row_chunks(
    X, chunk_rows: int = 16384, columns: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray | sparse.csr_matrix]]:
    """``(start, block)`` over consecutive row blocks of ``X`` (optionally only ``columns``);
    never reads all of a backed matrix at once."""
    n = X.shape[0]
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        block = X[start:stop]
        if columns is not None:
            block = block[:, columns]
        if sparse.issparse(block):
            block = sparse.csr_matrix(block)
        else:
            block = np.asarray(block)
        yield start, block


@dataclass
class MatrixSummary:
    """One chunked pass over a matrix: what the input checks and the standardisation need."""

    n_obs: int
    n_vars: int
    min: float
    max: float
    all_integer: bool
    n_nonfinite: int
    row_sums: np.ndarray
    col_mean: np.ndarray
    col_var: np.ndarray


def summarize(X, chunk_rows: int = 16384, columns: np.ndarray | None = None) -> MatrixSummary:
    n, g = X.shape[0], (X.shape[1] if columns is None else len(columns))
    vmin, vmax = np.inf, -np.inf
    integer, nonfinite = True, 0
    row_sums = np.zeros(n, dtype=np.float64)
    col_sum = np.zeros(g, dtype=np.float64)
    col_sq = np.zeros(g, dtype=np.float64)
    for start, block in iter_row_chunks(X, chunk_rows, columns):
        if sparse.issparse(block):
            vals = block.data
            if block.nnz < block.shape[0] * block.shape[1]:
                vmin, vmax = min(vmin, 0.0), max(vmax, 0.0)
        else:
            vals = block.ravel()
        vals = np.asarray(vals)
        if not np.issubdtype(vals.dtype, np.number) or np.issubdtype(vals.dtype, np.complexfloating):
            raise ValueError(f"The matrix holds {vals.dtype} values; scnapse needs real numbers.")
        finite = np.isfinite(vals) if np.issubdtype(vals.dtype, np.floating) else None
        if finite is not None and not finite.all():
            nonfinite += int((~finite).sum())
            continue
        if vals.size:
            vmin, vmax = min(vmin, float(vals.min())), max(vmax, float(vals.max()))
            if integer and np.issubdtype(vals.dtype, np.floating):
                integer = bool(np.all(vals == np.round(vals)))
        b64 = block.astype(np.float64)
        row_sums[start : start + block.shape[0]] = np.asarray(b64.sum(axis=1)).ravel()
        col_sum += np.asarray(b64.sum(axis=0)).ravel()
        sq = b64.multiply(b64) if sparse.issparse(b64) else b64 * b64
        col_sq += np.asarray(sq.sum(axis=0)).ravel()
    mean = col_sum / max(n, 1)
    var = np.maximum(col_sq / max(n, 1) - mean**2, 0.0)
    if vmin == np.inf:
        vmin = vmax = 0.0
    return MatrixSummary(n, g, float(vmin), float(vmax), integer, nonfinite, row_sums, mean, var)


class Matrix:
    """Rows of a dense, sparse or backed matrix, served as dense ``float32`` batches on ``device``.

    In-memory data is moved to the device once. Sparse data stays sparse (CSR arrays on the
    device); a batch is scattered into a dense block. The user's matrix is never modified.
    """

    def __init__(self, X, device: torch.device | str = "cpu", columns: np.ndarray | None = None):
        self.device = torch.device(device)
        self.shape = tuple(X.shape)
        self.columns = None
        if is_backed(X):
            self.kind = "backed"
            self._X = X
            if columns is not None:
                self.columns = np.asarray(columns)
                self.shape = (X.shape[0], len(self.columns))
            return
        if columns is not None:
            X = X[:, np.asarray(columns)]
            self.shape = tuple(X.shape)
        if sparse.issparse(X):
            self.kind = "sparse"
            csr = X.tocsr() if not isinstance(X, sparse.csr_matrix) else X
            if not csr.has_canonical_format:
                csr = csr.copy()
                csr.sum_duplicates()
            self.indptr = torch.from_numpy(csr.indptr.astype(np.int64)).to(self.device)
            self.indices = torch.from_numpy(np.asarray(csr.indices, dtype=np.int32)).to(self.device)
            self.data = torch.from_numpy(np.asarray(csr.data, dtype=np.float32)).to(self.device)
        else:
            self.kind = "dense"
            self.dense = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self.device)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        if self.kind == "sparse":
            return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.data))
        if self.kind == "dense":
            return self.dense.numel() * 4
        return 0

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense rows ``idx`` (a 1-D long tensor on this matrix's device)."""
        if self.kind == "dense":
            return self.dense.index_select(0, idx)
        if self.kind == "sparse":
            return self._take_sparse(idx)
        rows = idx.cpu().numpy()
        order = np.argsort(rows, kind="stable")
        block = _read_rows(self._X, rows[order])
        if self.columns is not None:
            block = block[:, self.columns]
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        out = np.empty_like(block, dtype=np.float32)
        out[order] = block
        return torch.from_numpy(out).to(self.device, non_blocking=True)

    def _take_sparse(self, idx: torch.Tensor) -> torch.Tensor:
        starts = self.indptr[idx]
        counts = self.indptr[idx + 1] - starts
        total = int(counts.sum())
        out = torch.zeros(len(idx), self.shape[1], dtype=torch.float32, device=self.device)
        if total == 0:
            return out
        row_of = torch.repeat_interleave(torch.arange(len(idx), device=self.device), counts, output_size=total)
        first = torch.cumsum(counts, 0) - counts
        pos = torch.arange(total, device=self.device) - torch.repeat_interleave(first - starts, counts, output_size=total)
        out[row_of, self.indices[pos].long()] = self.data[pos]
        return out


class Loader:
    """Mini-batches over the rows ``indices`` of several aligned fields.

    ``fields`` maps names to a :class:`Matrix` or a tensor with one row per cell. Each batch is a
    dict of tensors on ``device``. The rows inside a batch are sorted (which keeps backed reads
    sequential); with ``shuffle`` the batches change each pass, drawn from ``generator``.
    A final batch of one row is dropped while training (batch norm cannot use it).
    """

    def __init__(
        self,
        fields: Mapping[str, Matrix | torch.Tensor],
        indices: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_single: bool = False,
        device: torch.device | str = "cpu",
    ):
        self.fields = dict(fields)
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_single = drop_single
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_batches(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator)]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_single and len(idx) == 1 and len(order) > 1:
                continue
            idx = torch.sort(idx).values
            yield self.batch(idx)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, f in self.fields.items():
            if isinstance(f, Matrix):
                out[name] = f.take(idx.to(f.device))
            else:
                out[name] = f[idx.to(f.device)].to(self.device, non_blocking=True)
        return out


def split_indices(
    n: int, validation_fraction: float, generator: torch.Generator, *, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random (optionally stratified) train / validation split of ``range(n)``.

    Raises a ``ValueError`` when the split would leave too few cells on either side.
    """
    if validation_fraction <= 0:
        return np.arange(n), np.arange(0)
    if stratify is None:
        perm = torch.randperm(n, generator=generator).numpy()
        n_val = int(round(n * validation_fraction))
        if n_val < 1 or n - n_val < 2:
            raise ValueError(
                f"validation_fraction={validation_fraction} of {n} cells leaves {n_val} for validation "
                f"and {n - n_val} for training; use more cells or validation_fraction=0 (no validation)."
            )
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    train, val = [], []
    codes = np.unique(stratify, return_inverse=True)[1]
    for c in range(codes.max() + 1):
        members = np.flatnonzero(codes == c)
        perm = members[torch.randperm(len(members), generator=generator).numpy()]
        n_val = int(round(len(members) * validation_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
    if len(val) == 0:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n} cells leaves none for validation; "
            "use more cells or validation_fraction=0."
        )
    return train, val
