"""The input transform a model learns at fit time and applies unchanged to new data."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

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


def check_informative(summary: MatrixSummary, what: str) -> None:
    """Refuse a matrix with nothing to learn: every gene constant over the cells (all zeros, say)."""
    var, mean = np.asarray(summary.col_var), np.asarray(summary.col_mean)
    if var.size and bool(np.all(var <= 1e-12 * np.maximum(1.0, mean**2))):
        what_values = "is all zeros" if summary.min == summary.max == 0 else "has every gene constant over the cells"
        raise ValueError(
            f"{what} {what_values} ({summary.n_obs} cells × {summary.n_vars} genes): there is nothing to "
            "learn. Check that the right matrix is given (layer=, or an earlier filtering / subsetting step)."
        )


#: forms of a cell × gene matrix that are told apart (see :func:`data_form`)
FORMS = ("counts", "normalised", "log-normalised", "other", "scaled")


def _constant_total(sums: np.ndarray, tol: float = 1e-3) -> float | None:
    """The rows' common total, when at least two non-empty rows share one (within ``tol``)."""
    sums = sums[sums > 0]
    if len(sums) < 2:
        return None
    mid = float(np.median(sums))
    return mid if float(np.max(np.abs(sums - mid))) <= tol * mid else None


def data_form(block) -> tuple[str, float | None]:
    """``(form, total)`` of a block of whole rows (all the data's genes; NumPy or SciPy sparse).

    ``"counts"``: non-negative integers; ``"normalised"``: every cell has the same total
    (``sc.pp.normalize_total``; ``total`` is it); ``"log-normalised"``: ``expm1`` of the rows has
    the same total (``normalize_total`` then ``log1p``; ``total`` is the target sum);
    ``"scaled"``: negative values; ``"other"``: none of these (e.g. a gene subset of log data).
    NaN or infinite values raise a ``ValueError``."""
    csr = sparse.csr_matrix(block, dtype=np.float64) if sparse.issparse(block) else None
    vals = csr.data if csr is not None else np.asarray(block, dtype=np.float64).ravel()
    if not np.all(np.isfinite(vals)):
        raise ValueError("The data hold NaN or infinite values; remove or impute them first.")
    if vals.size == 0:
        return "other", None
    if vals.min() < 0:
        return "scaled", None
    if np.all(vals == np.round(vals)):
        return "counts", float(vals.max())

    def sums(values):
        if csr is not None:
            return np.asarray(sparse.csr_matrix((values, csr.indices, csr.indptr), shape=csr.shape).sum(axis=1)).ravel()
        return values.reshape(np.shape(block)).sum(axis=1)

    total = _constant_total(sums(vals))
    if total is not None:
        return "normalised", total
    total = _constant_total(sums(np.expm1(vals)))
    if total is not None:
        return "log-normalised", total
    return "other", None


def first_rows(X, n: int = 2048):
    """The first ``n`` rows of any matrix (dense, sparse, backed), all genes."""
    from ..train.data import iter_row_chunks

    for _, block in iter_row_chunks(X, n):
        return block
    return np.zeros((0, X.shape[1]), dtype=np.float32)


def expm1_block(block):
    """``expm1`` of a row block (undoes ``log1p``); sparse stays sparse, the input is not modified."""
    if sparse.issparse(block):
        out = sparse.csr_matrix(block, dtype=np.float32, copy=True)
        np.expm1(out.data, out=out.data)
        return out
    return np.expm1(np.asarray(block, dtype=np.float32))


def query_reading(prep: Preprocessing, trained: dict | None, block, *, what: str,
                  strict: bool) -> tuple[str, bool, Preprocessing]:
    """How to bring a query to the form a model was trained on: ``(query form, undo_log, prep)``.

    ``block`` is the query's first rows (all its genes), ``trained`` the training data's
    ``{"form", "total"}`` (``None`` for models saved before it was recorded). A model that reads
    counts (``prep.log_normalize``) takes counts and ``normalize_total``-ed data as they are and
    log1p(normalised) data through ``expm1`` (exact for any target sum); a model trained on
    log1p(normalised) data gets counts log-normalised at the training data's target sum (10⁴ when
    unknown) and log data of another target sum re-normalised. Data with negative values are read
    as they are by a model trained on such data (real-valued features), refused by any other.
    ``strict`` (the autoencoder): refuse what cannot be converted with certainty, with the fix."""
    form, total = data_form(block)
    if form == "scaled" and (trained or {}).get("form") == "scaled" and not prep.log_normalize:
        return form, False, prep  # real-valued features (z-scores, ΔCt), as the model was trained on
    if form == "scaled":
        raise ValueError(
            f"The data given to the {what} have negative values: it looks scaled. Give raw counts or "
            "log-normalised data (e.g. layer='counts'), as the model was trained on."
        )
    trained = trained or {}
    tf = trained.get("form")
    if tf is None or (tf == "other" and not strict):
        reads_counts = prep.log_normalize  # what the model's own transform says
    elif tf in ("counts", "normalised") and prep.log_normalize:
        reads_counts = True
    elif tf == "log-normalised" and not prep.log_normalize:
        reads_counts = False
    else:  # scaled or unrecognised training data, or a transform chosen by hand: read as they are
        return form, False, prep
    if reads_counts:
        if form in ("counts", "normalised"):
            return form, False, prep
        if form == "log-normalised":
            return form, True, prep
        if strict:
            raise ValueError(
                f"The {what} was trained on raw counts; these data are neither counts (non-negative "
                "integers) nor normalize_total-ed or log1p(normalize_total) data of all genes, so they "
                "cannot be converted. Give the counts (e.g. layer='counts', or the object before "
                "subsetting genes)."
            )
        return form, False, replace(prep, log_normalize=False)
    target = trained.get("total") if trained.get("form") == "log-normalised" else None
    if form == "normalised" or (form == "counts" and (total or 0) > 30):
        if target is None and strict:
            raise ValueError(
                f"These data look like raw counts, but the {what} was trained on data of another form "
                f"({trained.get('form', 'unknown')}): bring them to that form first (e.g. "
                "sc.pp.normalize_total + sc.pp.log1p, as for the training data), or pick that layer=."
            )
        return "counts" if form == "counts" else form, False, replace(prep, log_normalize=True,
                                                                       target_sum=float(target or 1e4))
    if form == "log-normalised" and target is not None and abs(total - target) > 1e-3 * target:
        return form, True, replace(prep, log_normalize=True, target_sum=float(target))
    return "log-normalised" if form == "counts" else form, False, prep


def training_form(X) -> dict:
    """The training data's form (``{"form", "total"}``, from its first rows), recorded in ``params``."""
    try:
        form, total = data_form(first_rows(X))
    except ValueError:
        form, total = "other", None
    return {"form": form, "total": total}
