"""AnnData in, tensors out: picking the matrix, checking it, and matching genes by name."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def check_adata(adata, *, min_obs: int = 2, what: str = "adata") -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"{what} must be an AnnData, not {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"{what} is empty ({adata.n_obs} cells × {adata.n_vars} genes); give at least "
            f"{min_obs} cells and one gene (check earlier filtering steps)."
        )
    if adata.n_obs < min_obs:
        raise ValueError(
            f"{what} has {adata.n_obs} cell(s); training needs at least {min_obs}. "
            "Give more cells (check earlier filtering or subsetting)."
        )


def copy_of(adata: AnnData) -> AnnData:
    """``adata.copy()`` for a step's ``copy=True``; a backed AnnData gives an in-memory copy (its
    matrix read into memory), where anndata would ask for a file name."""
    if getattr(adata, "isbacked", False):
        return adata.to_memory()
    return adata.copy()


def renamed_adata(old: str):
    """Let a function whose first argument is now ``adata`` still take it as ``old=...``
    (a keyword), with a FutureWarning. ``inspect.signature`` shows the new signature."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if args or "adata" in kwargs:
                    raise TypeError(f"{func.__name__}() got the data twice: give adata only ({old}= is its old name).")
                warnings.warn(
                    f"{func.__name__}({old}=...) is now {func.__name__}(adata=...); {old}= will be removed.",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs["adata"] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def get_matrix(adata: AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError("adata.X is empty (None); pass layer=... naming a layer that holds the data.")
        return X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not in adata.layers; available layers: {list(adata.layers.keys())} "
            "(or layer=None for adata.X)."
        )
    return adata.layers[layer]


def gene_mask(adata: AnnData, use_highly_variable: bool | None) -> np.ndarray | None:
    """Boolean mask of the genes to use, scanpy-style: ``None`` means 'if the column exists'."""
    has = "highly_variable" in adata.var.columns
    if use_highly_variable is None:
        use_highly_variable = has
    if not use_highly_variable:
        return None
    if not has:
        raise KeyError(
            "use_highly_variable=True but adata.var has no 'highly_variable' column; "
            "run sc.pp.highly_variable_genes first or pass use_highly_variable=False."
        )
    mask = adata.var["highly_variable"].to_numpy(dtype=bool)
    if not mask.any():
        raise ValueError("adata.var['highly_variable'] selects no gene; use use_highly_variable=False.")
    return mask


def subset_columns(X, mask: np.ndarray | None):
    """In-memory matrices are subset at once (a copy of the subset only); backed ones stay lazy."""
    from .train.data import is_backed

    if mask is None or is_backed(X):
        return X
    return X[:, np.flatnonzero(mask)]


def gene_index(query: pd.Index, reference: pd.Index, *, min_overlap: float = 0.5, what: str = "model"):
    """Positions of ``reference`` genes in ``query`` (-1 where missing).

    Raises a ``ValueError`` naming the overlap when fewer than ``min_overlap`` of the reference
    genes are present; warns with the count when some are missing (they are filled with zeros).
    """
    reference = pd.Index(reference)
    if not pd.Index(query).is_unique:
        raise ValueError("The data's gene names (var_names) are not unique; run adata.var_names_make_unique().")
    pos = pd.Index(query).get_indexer(reference)
    n_missing = int((pos < 0).sum())
    overlap = 1 - n_missing / max(len(reference), 1)
    if overlap < min_overlap:
        example = list(reference[:3])
        raise ValueError(
            f"Only {len(reference) - n_missing} of the {what}'s {len(reference)} genes "
            f"({overlap:.0%}) are in the data (need at least {min_overlap:.0%}). Check the species and "
            f"the gene-name style (the {what} uses names like {example}); var_names must hold the same kind."
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of the {what}'s {len(reference)} genes are missing from the data and are "
            "filled with zeros.",
            UserWarning,
            stacklevel=3,
        )
    return pos


def reindex_block(block, pos: np.ndarray) -> np.ndarray:
    """Columns ``pos`` of a row block as dense float32, zeros where ``pos`` is -1."""
    present = pos >= 0
    out = np.zeros((block.shape[0], len(pos)), dtype=np.float32)
    sub = block[:, pos[present]]
    out[:, present] = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    return out


def sanitize_for_uns(obj):
    """Make a value writable to ``.h5ad``: None → 'None', tuples → lists, numpy scalars → Python."""
    if obj is None:
        return "None"
    if isinstance(obj, dict):
        return {str(k): sanitize_for_uns(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [sanitize_for_uns(v) for v in obj]
        if any(isinstance(v, dict) for v in items):
            return {str(i): v for i, v in enumerate(items)}
        return items
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_embedding(adata, model, embedding, *, key_added: str | None, default_obsm: str, default_uns: str) -> None:
    """Store an embedding step's result the scanpy way: ``obsm[key]`` and ``uns[key]`` =
    ``{"params", "history", "obsm_key"}`` (defaults ``default_obsm`` / ``default_uns``), and log it."""
    from ._settings import logger

    obsm_key, uns_key = key_added or default_obsm, key_added or default_uns
    adata.obsm[obsm_key] = embedding
    adata.uns[uns_key] = sanitize_for_uns(
        {"params": model.params, "history": model.history.to_dict(), "obsm_key": obsm_key,
         **({"baseline": model.baseline} if model.baseline else {})}
    )
    logger.info(f"    added 'obsm[{obsm_key!r}]' ({embedding.shape[1]} dimensions), 'uns[{uns_key!r}]'")
