"""scIB integration metrics (batch correction and biological conservation) via ``scib-metrics``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pandas as pd
from anndata import AnnData

from .._settings import logger
from ..pipeline.registry import step

#: the metrics of :func:`integration_metrics`, by category, as scIB names them
BIO_METRICS = ("Isolated labels", "Leiden NMI", "Leiden ARI", "Silhouette label", "cLISI")
BATCH_METRICS = ("Silhouette batch", "iLISI", "KBET", "Graph connectivity", "PCR comparison")
#: scIB's weighting of the two categories in the total
BIO_WEIGHT, BATCH_WEIGHT = 0.6, 0.4


def _scib():
    try:
        import scib_metrics
    except ImportError:
        raise ImportError("integration_metrics needs the scib-metrics package: pip install 'scnapse[integration]' "
                          "(or pip install scib-metrics).") from None
    return scib_metrics


def _neighbors(x: np.ndarray, k: int):
    """Exact k nearest neighbours (self included, as scib-metrics expects)."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return NeighborsResults(indices=idx.astype(np.int64), distances=dist.astype(np.float32))


@contextmanager
def _exact_diffusion_neighbours():
    """kBET finds neighbours on diffusion maps with pynndescent, whose first call compiles for tens
    of seconds and which is approximate on small subsets; within this block it uses the exact
    search above instead (restored afterwards)."""
    from scib_metrics.utils import _diffusion_nn as module

    original = module.nearest_neighbors
    module.nearest_neighbors = SimpleNamespace(
        NeighborsResults=original.NeighborsResults,
        pynndescent=lambda x, n_neighbors, **_: _neighbors(np.asarray(x, dtype=np.float32),
                                                           min(n_neighbors, len(x))))
    try:
        yield
    finally:
        module.nearest_neighbors = original


def _pre_integration_pca(adata: AnnData, n_comps: int, seed: int) -> np.ndarray:
    """PCA of ``X`` (normalised and log-transformed first when ``X`` holds raw counts)."""
    import scanpy as sc
    import scipy.sparse as sp

    tmp = AnnData(adata.X.copy() if not sp.issparse(adata.X) else adata.X.tocsr(copy=True))
    tmp.X = tmp.X.astype(np.float32)
    values = tmp.X.data if sp.issparse(tmp.X) else np.asarray(tmp.X)
    if values.size and values.min() >= 0 and np.array_equal(values, np.round(values)) and values.max() > 20:
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    n_comps = int(min(n_comps, min(tmp.shape) - 1))
    sc.pp.pca(tmp, n_comps=n_comps, random_state=seed)
    return tmp.obsm["X_pca"]


def _score_one(scib, x, x_pre, labels, batch, *, seed: int, kbet: bool, n_neighbors: Sequence[int]):
    n15, n50, n90 = (min(k, len(x) - 1) for k in n_neighbors)
    nn = _neighbors(x, max(n15, n50, n90))
    nn15, nn50, nn90 = (nn.subset_neighbors(n=k) for k in (n15, n50, n90))
    out = {}
    out["Isolated labels"] = scib.isolated_labels(x, labels, batch)
    nmi_ari = scib.nmi_ari_cluster_labels_leiden(nn15, labels, optimize_resolution=True, seed=seed)
    out["Leiden NMI"], out["Leiden ARI"] = nmi_ari["nmi"], nmi_ari["ari"]
    out["Silhouette label"] = scib.silhouette_label(x, labels)
    out["cLISI"] = scib.clisi_knn(nn90, labels)
    out["Silhouette batch"] = scib.silhouette_batch(x, labels, batch)
    out["iLISI"] = scib.ilisi_knn(nn90, batch)
    out["KBET"] = np.nan
    if kbet:
        try:
            with warnings.catch_warnings(), _exact_diffusion_neighbours():
                warnings.simplefilter("ignore")
                out["KBET"] = scib.kbet_per_label(nn50, batch, labels)
        except Exception as err:  # diffusion maps / neighbour search can fail on tiny or disconnected data
            logger.warning(f"kBET could not be computed ({type(err).__name__}: {err}); it is left out (NaN).")
    out["Graph connectivity"] = scib.graph_connectivity(nn15, labels)
    out["PCR comparison"] = scib.pcr_comparison(x_pre, x, batch, categorical=True)
    return {k: float(v) for k, v in out.items()}


@step("scnapse.tl.integration_metrics")
def integration_metrics(
    adata: AnnData,
    *,
    keys: Sequence[str] = ("X_autoencoder", "X_pca"),
    batch_key: str = "batch",
    labels_key: str = "cell_type",
    pre_integrated_key: str | None = None,
    n_comps: int = 50,
    kbet: bool = True,
    seed: int = 0,
    key_added: str = "integration_metrics",
) -> pd.DataFrame:
    """Score embeddings with the scIB metrics (Luecken et al. 2022) through ``scib-metrics``.

    Biological conservation: isolated labels, Leiden NMI and ARI (best over resolutions
    0.2–2.0), label silhouette, cLISI. Batch correction: batch silhouette, iLISI, kBET (per
    label), graph connectivity, PCR comparison. Each metric lies in [0, 1], higher is better;
    the category scores are their means (a metric that could not be computed is left out of the
    mean), and ``Total = 0.6 × bio conservation + 0.4 × batch correction``. The scores are not
    min–max scaled across embeddings, so tables of different runs compare. Neighbours are exact
    (15, 50 and 90 per cell, as the scIB benchmark uses).

    Parameters
    ----------
    adata
        Annotated data with the embeddings in ``obsm``.
    keys
        The ``obsm`` keys of the embeddings to score (each one row of the table).
    batch_key
        Column of ``obs`` with the batch of each cell (at least two batches).
    labels_key
        Column of ``obs`` with the cell-type labels.
    pre_integrated_key
        ``obsm`` key of the unintegrated embedding the PCR comparison measures against; ``None``
        computes a PCA of ``X`` (after normalising and log-transforming it when it holds counts).
    n_comps
        Number of principal components of that PCA.
    kbet
        Compute kBET (the slowest metric; ``False`` leaves it out of the batch score).
    seed
        Seed of the Leiden clusterings and the PCA: the same seed gives the same table.
    key_added
        The table is written to ``uns[key_added]``, the parameters to ``uns[key_added + '_params']``.

    Returns
    -------
    pandas.DataFrame
        One row per embedding; the ten metrics, ``Bio conservation``, ``Batch correction``,
        ``Total`` and ``seconds`` (time to score the embedding) as columns.
    """
    for col, what in ((batch_key, "batch_key"), (labels_key, "labels_key")):
        if col not in adata.obs.columns:
            raise KeyError(f"{what}={col!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
        if adata.obs[col].isna().any():
            raise ValueError(f"obs[{col!r}] has missing values (NaN); fill or drop those cells first.")
    if isinstance(keys, str):
        keys = [keys]
    missing = [k for k in keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"{missing} not in adata.obsm (available: {list(adata.obsm.keys())}); run those steps first.")
    if not keys:
        raise ValueError("keys is empty: name at least one obsm embedding to score.")
    batch = adata.obs[batch_key].astype(str).to_numpy()
    labels = adata.obs[labels_key].astype(str).to_numpy()
    if len(np.unique(batch)) < 2:
        raise ValueError(f"obs[{batch_key!r}] has a single batch; batch-correction metrics need at least two.")
    if adata.n_obs < 20:
        raise ValueError(f"integration_metrics needs at least 20 cells (got {adata.n_obs}).")
    if pre_integrated_key is not None and pre_integrated_key not in adata.obsm:
        raise KeyError(f"pre_integrated_key={pre_integrated_key!r} is not in adata.obsm "
                       f"(available: {list(adata.obsm.keys())}).")
    scib = _scib()
    x_pre = (np.asarray(adata.obsm[pre_integrated_key], dtype=np.float32) if pre_integrated_key is not None
             else _pre_integration_pca(adata, n_comps, seed))
    rows = {}
    for key in keys:
        x = np.asarray(adata.obsm[key], dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"obsm[{key!r}] has NaN or infinite values; it cannot be scored.")
        t0 = time.perf_counter()
        row = _score_one(scib, x, x_pre, labels, batch, seed=seed, kbet=kbet, n_neighbors=(15, 50, 90))
        bio = float(np.nanmean([row[m] for m in BIO_METRICS]))
        bat = float(np.nanmean([row[m] for m in BATCH_METRICS]))
        row.update({"Bio conservation": bio, "Batch correction": bat,
                    "Total": BIO_WEIGHT * bio + BATCH_WEIGHT * bat, "seconds": time.perf_counter() - t0})
        rows[key] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "embedding"
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {
        "keys": list(keys), "batch_key": batch_key, "labels_key": labels_key,
        "pre_integrated_key": pre_integrated_key or "PCA of X", "n_comps": int(n_comps), "kbet": bool(kbet),
        "seed": int(seed), "bio_metrics": list(BIO_METRICS), "batch_metrics": list(BATCH_METRICS),
        "weights": {"bio": BIO_WEIGHT, "batch": BATCH_WEIGHT},
        "scib_metrics_version": getattr(scib, "__version__", "unknown"),
    }
    logger.info(f"scIB metrics (obs[{batch_key!r}], obs[{labels_key!r}]):\n"
                f"{table[['Bio conservation', 'Batch correction', 'Total']].round(3).to_string()}")
    return table
