"""Query mapping against retraining: a batch-aware autoencoder trained on reference batches, new
batches added with ``sn.tl.map_query`` (reference weights frozen), compared with one model
retrained on reference + query — time, and the scIB total of the joint embedding.

    python benchmarks/map_query.py [--out benchmarks/results/map_query.json]

Needs ``pip install scib-metrics``.
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import numpy as np

import scnapse as sn


def run_set(name, adata, query_batches):
    adata = adata.copy()
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    is_query = adata.obs["batch"].isin(query_batches).to_numpy()
    ref, query = adata[~is_query].copy(), adata[is_query].copy()
    t0 = time.perf_counter()
    model = sn.models.Autoencoder(batch_key="batch").fit(ref, progress=False)
    ref_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    sn.tl.map_query(query, model, batch_key="batch")
    map_seconds = time.perf_counter() - t0
    mapped = ad.concat([ref, query])
    mapped.obsm["X_mapped"] = np.concatenate([model.transform(ref), query.obsm["X_autoencoder"]])
    t0 = time.perf_counter()
    retrained = sn.tl.autoencoder(adata, batch_key="batch", progress=False, copy=True)
    retrain_seconds = time.perf_counter() - t0
    order = np.concatenate([np.flatnonzero(~is_query), np.flatnonzero(is_query)])
    mapped.obsm["X_retrained"] = retrained.obsm["X_autoencoder"][order]
    table = sn.tl.integration_metrics(mapped, keys=["X_mapped", "X_retrained"], batch_key="batch",
                                      labels_key="cell_type")
    out = {"reference_cells": int(ref.n_obs), "query_cells": int(query.n_obs), "query_batches": query_batches,
           "reference_training_seconds": round(ref_seconds, 2), "map_query_seconds": round(map_seconds, 2),
           "retrain_seconds": round(retrain_seconds, 2),
           "map_over_retrain_time": round(map_seconds / retrain_seconds, 3),
           "total_mapped": round(float(table.loc["X_mapped", "Total"]), 4),
           "total_retrained": round(float(table.loc["X_retrained", "Total"]), 4),
           "bio_mapped": round(float(table.loc["X_mapped", "Bio conservation"]), 4),
           "bio_retrained": round(float(table.loc["X_retrained", "Bio conservation"]), 4)}
    print(f"== {name}: {json.dumps(out)}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/map_query.json")
    args = ap.parse_args()
    results = {"command": "python benchmarks/map_query.py", "sets": {}}
    results["sets"]["simulated_batches"] = run_set(
        "simulated_batches", sn.datasets.simulated_batches(n_cells=2000, seed=0), ["batch2"])
    results["sets"]["pbmc_cross_study"] = run_set("pbmc_cross_study", sn.datasets.pbmc_cross_study(), ["pbmc160"])
    from _common import write_results

    write_results(results, args.out)


if __name__ == "__main__":
    main()
