from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import copy_of
from .._settings import logger
from ..pipeline.registry import step
from ._annotate import check_adata_arg


def knn_accuracy(embedding: np.ndarray, labels, *, n_neighbors: int = 15, n_folds: int = 5, seed: int = 0) -> float:
    """Mean held-out accuracy of a ``n_neighbors``-NN classifier, stratified ``n_folds``-fold."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    min_class = pd.Series(labels).value_counts().min()
    folds = StratifiedKFold(n_splits=int(max(2, min(n_folds, min_class))), shuffle=True, random_state=seed)
    clf = KNeighborsClassifier(n_neighbors=n_neighbors)
    return float(cross_val_score(clf, embedding, labels, cv=folds).mean())


def leiden_ari(
    embedding: np.ndarray, labels, *, resolutions: Sequence[float] = (0.5, 1.0), n_neighbors: int = 15,
    seed: int = 0,
) -> tuple[float, float]:
    """Best adjusted Rand index of Leiden clusterings (on a kNN graph of ``embedding``) against
    ``labels``, over ``resolutions``; returns ``(ari, resolution)``."""
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    tmp = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(embedding))]))
    tmp.obsm["X_emb"] = np.asarray(embedding, dtype=np.float32)
    sc.pp.neighbors(tmp, use_rep="X_emb", n_neighbors=n_neighbors, random_state=seed)
    best = (-1.0, float(resolutions[0]))
    for res in resolutions:
        sc.tl.leiden(tmp, resolution=res, random_state=seed, flavor="igraph", n_iterations=2,
                     directed=False, key_added="leiden")
        ari = adjusted_rand_score(np.asarray(labels), tmp.obs["leiden"].to_numpy())
        best = max(best, (float(ari), float(res)))
    return best


@step("scnapse.tl.compare_embeddings")
def compare_embeddings(
    adata: AnnData,
    *,
    keys: Sequence[str] = ("X_autoencoder", "X_pca"),
    labels_key: str,
    n_neighbors: int = 15,
    n_folds: int = 5,
    resolutions: Sequence[float] = (0.5, 1.0),
    seed: int = 0,
    key_added: str = "embedding_comparison",
    copy: bool = False,
) -> AnnData | None:
    """Score embeddings against known labels, side by side.

    Each embedding gets its ``n_neighbors``-NN label accuracy (stratified ``n_folds``-fold
    cross-validation) and the best Leiden ARI over ``resolutions``; the table is written to
    ``uns[key_added]`` (one row per embedding) and logged.

    Parameters
    ----------
    adata
        Cells with the embeddings in ``obsm`` and the labels in ``obs``.
    keys
        ``obsm`` keys to compare.
    labels_key
        ``obs`` column of known labels.
    n_neighbors
        Neighbours of the kNN classifier and of the Leiden graph.
    n_folds
        Folds of the kNN cross-validation.
    resolutions
        Leiden resolutions tried; the best ARI is reported.
    seed
        Seed of the folds and of Leiden.
    key_added
        ``uns`` key of the table.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        The copy when ``copy=True``; otherwise ``None`` (``adata`` is updated).
    """
    check_adata_arg(adata)
    if labels_key not in adata.obs.columns:
        raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"{missing} not in adata.obsm (available: {list(adata.obsm.keys())}); run those steps first.")
    if copy:
        adata = copy_of(adata)
    labels = adata.obs[labels_key].astype(str).to_numpy()
    rows = []
    for key in keys:
        emb = np.asarray(adata.obsm[key])
        ari, res = leiden_ari(emb, labels, resolutions=resolutions, n_neighbors=n_neighbors, seed=seed)
        rows.append({"embedding": key, "dimensions": emb.shape[1],
                     f"knn{n_neighbors}_accuracy": knn_accuracy(emb, labels, n_neighbors=n_neighbors,
                                                                 n_folds=n_folds, seed=seed),
                     "leiden_ari": ari, "leiden_resolution": res})
    table = pd.DataFrame(rows).set_index("embedding")
    adata.uns[key_added] = table
    logger.info(f"embeddings scored against obs[{labels_key!r}]:\n{table.round(3).to_string()}")
    return adata if copy else None
