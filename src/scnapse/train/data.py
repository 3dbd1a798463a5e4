"""Mini-batches from dense, sparse and backed matrices, without densifying the whole matrix.

A :class:`Matrix` holds the rows once, on the training device when they are in memory (a dense
tensor, or the three arrays of a CSR matrix), and forms a dense float32 batch from a set of row
indices. A backed ``.h5ad`` (or zarr) matrix stays on disk: a shuffling :class:`Loader` reads it in
shuffled chunks of contiguous rows (one sequential read per chunk, the next chunk read in a
background thread while the current one trains) and draws its mini-batches inside each chunk.

Memory model (backed input): held in memory are the row indices, the per-cell library sizes and
at most two chunks (the one being trained on and the one being read); everything else streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import sparse

#: rows per shuffled chunk when a Loader reads a backed matrix (about 50 MB of a 2,000-gene
#: droplet count matrix); every chunk is one sequential read.
DEFAULT_CHUNK_ROWS = 16384


def is_backed(X) -> bool:
    """True for an on-disk matrix of a backed AnnData (h5py dataset or anndata's sparse dataset)."""
    mod = type(X).__module__
    return (mod.startswith(("h5py", "zarr")) or "sparse_dataset" in mod
            or type(X).__name__.endswith("SparseDataset"))


def _read_rows(X, rows: np.ndarray):
    """Rows ``rows`` (sorted) of any supported matrix, as an in-memory array or sparse matrix."""
    if is_backed(X):
        # h5py wants increasing indices; contiguous runs are read as slices
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return X[int(rows[0]) : int(rows[-1]) + 1]
        if len(rows) and len(rows) * 4 >= rows[-1] - rows[0] + 1:
            # dense enough: one sequential read of the span, then pick the rows in memory
            block = X[int(rows[0]) : int(rows[-1]) + 1]
            return block[rows - rows[0]]
        return X[rows]
    return X[rows]


def _to_device(array: np.ndarray, device: torch.device, pin_memory: bool) -> torch.Tensor:
    """A host array on ``device``; through pinned memory with an asynchronous copy to a GPU."""
    t = torch.from_numpy(array)
    if device.type == "cuda":
        if pin_memory:
            t = t.pin_memory()
        return t.to(device, non_blocking=pin_memory)
    return t.to(device)


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

    Parameters
    ----------
    X
        A NumPy array, a SciPy sparse matrix, or a backed AnnData's ``X``.
    device
        Where batches are served.
    columns
        Column indices to keep (e.g. the highly variable genes); ``None``: all.
    pin_memory
        Stage backed chunks in pinned memory for non-blocking copies to a GPU.
    """

    def __init__(self, X, device: torch.device | str = "cpu", columns: np.ndarray | None = None,
                 *, pin_memory: bool = False):
        self.device = torch.device(device)
        self.pin_memory = bool(pin_memory)
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
            pin = self.pin_memory
            self.indptr = _to_device(csr.indptr.astype(np.int64), self.device, pin)
            self.indices = _to_device(np.asarray(csr.indices, dtype=np.int32), self.device, pin)
            self.data = _to_device(np.asarray(csr.data, dtype=np.float32), self.device, pin)
        else:
            self.kind = "dense"
            self.dense = _to_device(np.ascontiguousarray(X, dtype=np.float32), self.device, self.pin_memory)

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
        return self.take_with_nonzeros(idx)[0]

    def take_with_nonzeros(self, idx: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """``(block, nonzeros)``: the dense rows ``idx`` as :meth:`take` gives them, and for sparse
        data the positions ``(rows, cols)`` of the block's stored entries (row-major; what a count
        likelihood evaluates at the non-zeros reads, without searching the block); else ``None``."""
        if self.kind == "dense":
            return self.dense.index_select(0, idx), None
        if self.kind == "sparse":
            return self._take_sparse(idx)
        rows = idx.cpu().numpy()
        order = np.argsort(rows, kind="stable")
        block = self.read(rows[order])
        block = block.toarray() if sparse.issparse(block) else np.asarray(block)
        out = np.empty_like(block, dtype=np.float32)
        out[order] = block
        return _to_device(out, self.device, self.pin_memory or self.device.type == "cuda"), None

    def read(self, rows: np.ndarray):
        """Rows ``rows`` (sorted, increasing) of the underlying matrix, in host memory (sparse
        stays sparse), restricted to this matrix's columns."""
        if self.kind != "backed":
            raise TypeError("Matrix.read is for backed matrices; in-memory rows are taken with take().")
        block = _read_rows(self._X, np.asarray(rows, dtype=np.int64))
        if self.columns is not None:
            block = block[:, self.columns]
        return block

    def load_rows(self, rows: np.ndarray) -> Matrix:
        """An in-memory :class:`Matrix` of the rows ``rows`` (sorted) of this backed matrix, on
        the same device (through pinned memory to a GPU)."""
        block = self.read(rows)
        if not sparse.issparse(block):
            block = np.asarray(block)
        return Matrix(block, self.device, pin_memory=self.pin_memory or self.device.type == "cuda")

    def _take_sparse(self, idx: torch.Tensor) -> torch.Tensor:
        starts = self.indptr[idx]
        counts = self.indptr[idx + 1] - starts
        total = int(counts.sum())
        out = torch.zeros(len(idx), self.shape[1], dtype=torch.float32, device=self.device)
        if total == 0:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return out, (empty, empty)
        row_of = torch.repeat_interleave(torch.arange(len(idx), device=self.device), counts, output_size=total)
        first = torch.cumsum(counts, 0) - counts
        pos = torch.arange(total, device=self.device) - torch.repeat_interleave(first - starts, counts, output_size=total)
        cols = self.indices[pos].long()
        out[row_of, cols] = self.data[pos]
        return out, (row_of, cols)


class Loader:
    """Mini-batches over the rows ``indices`` of several aligned fields.

    ``fields`` maps names to a :class:`Matrix` or a tensor with one row per cell. Each batch is a
    dict of tensors on ``device``; a sparse :class:`Matrix` field ``name`` also gives
    ``name + "_nonzeros"``, the ``(rows, cols)`` of its stored entries in the dense block
    (:meth:`Matrix.take_with_nonzeros`). The rows inside a batch are sorted (which keeps backed reads
    sequential); with ``shuffle`` the batches change each pass, drawn from ``generator``.
    A final batch of one row is dropped while training (batch norm cannot use it).

    ``chunk_size`` shuffles by chunks: the rows are cut into consecutive blocks of ``chunk_size``
    indices, the blocks are visited in a random order, and the rows of each block are shuffled
    and cut into batches (a batch never spans two blocks). Each block of a backed matrix is read
    once, sequentially, while the previous block trains (``prefetch``). ``None`` (default):
    :data:`DEFAULT_CHUNK_ROWS` when a field is backed, otherwise a full shuffle; ``0``: never
    chunk. With a single block the order is exactly the full shuffle's.

    :meth:`shard` gives one rank's view for distributed data parallel training: every rank draws
    the same global batches and keeps an equal share of each.

    Parameters
    ----------
    fields
        Names → :class:`Matrix` or tensor, all with the same rows.
    indices
        The rows to serve.
    batch_size
        Rows per batch.
    shuffle
        A new order every pass, drawn from ``generator``.
    generator
        Seeded generator of the shuffling.
    drop_single
        Drop a final batch of one row.
    device
        Where batches are served.
    chunk_size
        Rows per shuffled block (above).
    prefetch
        Read the next block of a backed matrix in a background thread.
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
        chunk_size: int | None = None,
        prefetch: bool = True,
    ):
        self.fields = dict(fields)
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_single = drop_single
        self.device = torch.device(device)
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 0):
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive number of rows, 0 (no chunks) or None.")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.prefetch = bool(prefetch)
        # distributed data parallel: this rank's share of each global batch (see shard())
        self.rank, self.world_size = 0, 1
        self.last_global_rows: int | None = None
        self.last_weight: torch.Tensor | None = None
        self._cache: tuple[np.ndarray, dict[str, Matrix]] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_batches(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    @property
    def backed(self) -> bool:
        return any(isinstance(f, Matrix) and f.kind == "backed" for f in self.fields.values())

    @property
    def chunk_rows(self) -> int | None:
        """Rows per shuffled chunk, or ``None`` for a full shuffle."""
        if self.chunk_size == 0:
            return None
        if self.chunk_size is None:
            return DEFAULT_CHUNK_ROWS if self.backed else None
        return self.chunk_size

    def shard(self, rank: int, world_size: int) -> Loader:
        """This loader as seen by ``rank`` of ``world_size`` processes (a shallow copy).

        All ranks must use generators in the same state: they then draw the same global batches,
        and each takes the rows ``rank, rank + world_size, ...`` of every (sorted) global batch.
        A global batch with fewer rows than ranks gives the missing ranks a repeated row with
        weight 0 (``last_weight``), so every rank runs every step.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
        view = copy.copy(self)
        view.rank, view.world_size = int(rank), int(world_size)
        view._cache = None
        return view

    # -- one pass ----------------------------------------------------------------------------------
    def _plan(self) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """This pass's ``[(rows of the chunk, [sorted batch indices, ...]), ...]``."""
        order = self.indices
        n = len(order)
        chunk = self.chunk_rows
        if self.shuffle and chunk is not None and chunk < n:
            blocks = [order[s : s + chunk] for s in range(0, n, chunk)]
            perm = torch.randperm(len(blocks), generator=self.generator)
            blocks = [blocks[int(i)] for i in perm]
            blocks = [b[torch.randperm(len(b), generator=self.generator)] for b in blocks]
        else:
            if self.shuffle:
                order = order[torch.randperm(n, generator=self.generator)]
            blocks = [order]
        plan = []
        for block in blocks:
            batches = []
            for start in range(0, len(block), self.batch_size):
                idx = block[start : start + self.batch_size]
                if self.drop_single and len(idx) == 1 and n > 1:
                    continue
                batches.append(torch.sort(idx).values)
            if batches:
                plan.append((block, batches))
        return plan

    def _chunk_matrices(self, batches: list[torch.Tensor]) -> tuple[np.ndarray, dict[str, Matrix]]:
        """Read the rows this rank needs from ``batches`` of every backed field, in one go."""
        need = torch.cat([self._shard_rows(b)[0] for b in batches]) if batches else torch.zeros(0, dtype=torch.long)
        rows = np.unique(need.numpy())
        mats = {name: f.load_rows(rows) for name, f in self.fields.items()
                if isinstance(f, Matrix) and f.kind == "backed"}
        return rows, mats

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        plan = self._plan()
        if not (self.backed and len(plan) > 1 and self.chunk_rows is not None):
            for _, batches in plan:
                for idx in batches:
                    yield self.batch(idx)
            return
        pool = ThreadPoolExecutor(max_workers=1) if self.prefetch else None
        try:
            pending = None
            for k, (_, batches) in enumerate(plan):
                if pending is None:
                    self._cache = self._chunk_matrices(batches)
                else:
                    self._cache = pending.result()
                pending = None
                if pool is not None and k + 1 < len(plan):
                    pending = pool.submit(self._chunk_matrices, plan[k + 1][1])
                for idx in batches:
                    yield self.batch(idx)
        finally:
            self._cache = None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    # -- one batch ---------------------------------------------------------------------------------
    def _shard_rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.world_size == 1:
            return idx, None
        mine = idx[self.rank :: self.world_size]
        weight = torch.ones(len(mine))
        if len(mine) == 0 and len(idx):
            mine = idx[self.rank % len(idx) :][:1]
            weight = torch.zeros(1)
        return mine, weight

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of rows ``idx`` (after :meth:`shard`: this rank's share of the global batch)."""
        if self.world_size > 1:
            self.last_global_rows = len(idx)
            idx, weight = self._shard_rows(idx)
            self.last_weight = weight.to(self.device)
        out = {}
        cache = self._cache
        for name, f in self.fields.items():
            if isinstance(f, Matrix):
                if cache is not None and name in cache[1]:
                    local = torch.from_numpy(np.searchsorted(cache[0], idx.numpy()))
                    m = cache[1][name]
                    block, nonzeros = m.take_with_nonzeros(local.to(m.device))
                else:
                    block, nonzeros = f.take_with_nonzeros(idx.to(f.device))
                out[name] = block
                if nonzeros is not None:  # sparse data: where the stored entries sit in the block
                    out[f"{name}_nonzeros"] = nonzeros
            else:
                out[name] = f[idx.to(f.device)].to(self.device, non_blocking=True)
        return out


def split_indices(
    n: int, validation_fraction: float, generator: torch.Generator, *, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random (optionally stratified) train / validation split of ``range(n)``.

    Parameters
    ----------
    n
        Number of cells.
    validation_fraction
        Share of the cells held out.
    generator
        Seeded generator that draws the split.
    stratify
        Labels to keep in proportion on both sides.

    Returns
    -------
    tuple of numpy.ndarray
        The training and the validation indices, each sorted.

    Raises
    ------
    ValueError
        When the split would leave too few cells on either side.
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
