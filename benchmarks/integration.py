"""Integration benchmark: unintegrated PCA, Harmony, scVI and scnapse's autoencoder side by side,
scored with the scIB metrics (``sn.tl.integration_metrics``) on a real cross-study PBMC set and on
simulated batches with batch-specific cell types; plus training time per epoch, scnapse vs scVI.

    python benchmarks/integration.py [--scvi-epochs 100] [--sim-cells 2000] [--out benchmarks/results/integration.json]

Needs ``pip install scvi-tools harmonypy scib-metrics``.
"""

from __future__ import annotations

import argparse
import inspect
import time

import numpy as np
import scanpy as sc

import scnapse as sn


def _prepare(adata):
    adata = adata.copy()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=30, random_state=0)
    return adata


def _harmony(adata, times):
    import harmonypy

    t0 = time.perf_counter()
    ho = harmonypy.run_harmony(adata.obsm["X_pca"], adata.obs, ["batch"], random_state=0, verbose=False)
    z = np.asarray(ho.Z_corr)
    adata.obsm["X_harmony"] = z.T if z.shape[0] != adata.n_obs else z
    times["X_harmony"] = {"seconds": time.perf_counter() - t0}


def _scvi(adata, times, max_epochs):
    import scvi

    scvi.settings.seed = 0
    tmp = adata.copy()
    scvi.model.SCVI.setup_anndata(tmp, layer="counts", batch_key="batch")
    model = scvi.model.SCVI(tmp)  # its defaults: 10 latent dimensions, 1 × 128 hidden, NB/ZINB
    t0 = time.perf_counter()
    model.train(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False)
    seconds = time.perf_counter() - t0
    epochs = len(model.history["elbo_train"])
    adata.obsm["X_scvi"] = model.get_latent_representation()
    times["X_scvi"] = {"seconds": seconds, "epochs": epochs, "seconds_per_epoch": seconds / epochs}


def _scnapse(adata, times):
    tmp = adata.copy()
    tmp.X = tmp.layers["counts"].copy()  # raw counts: the count VAE (negative binomial)
    kwargs = {}
    if "batch_key" in inspect.signature(sn.tl.autoencoder).parameters:
        kwargs["batch_key"] = "batch"
    t0 = time.perf_counter()
    sn.tl.autoencoder(tmp, **kwargs)
    seconds = time.perf_counter() - t0
    hist = tmp.uns["autoencoder"]["history"]
    epochs = len(hist["train_loss"])
    adata.obsm["X_autoencoder"] = tmp.obsm["X_autoencoder"]
    times["X_autoencoder"] = {"seconds": seconds, "epochs": epochs, "seconds_per_epoch": seconds / epochs,
                              "batch_key": bool(kwargs)}


def run_set(name, adata, scvi_epochs):
    adata = _prepare(adata)
    times = {}
    _harmony(adata, times)
    _scvi(adata, times, scvi_epochs)
    _scnapse(adata, times)
    keys = ["X_pca", "X_harmony", "X_scvi", "X_autoencoder"]
    table = sn.tl.integration_metrics(adata, keys=keys, batch_key="batch", labels_key="cell_type",
                                      pre_integrated_key="X_pca")
    print(f"\n== {name}: {adata.n_obs} cells × {adata.n_vars} genes, {adata.obs['batch'].nunique()} batches")
    print(table.drop(columns="seconds").round(3).T.to_string())
    return {"cells": adata.n_obs, "genes": adata.n_vars, "batches": int(adata.obs["batch"].nunique()),
            "scib": {k: {c: (None if not np.isfinite(v) else round(float(v), 4)) for c, v in row.items()}
                     for k, row in table.iterrows()},
            "training": times}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scvi-epochs", type=int, default=100)
    ap.add_argument("--sim-cells", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/integration.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = {"command": "python benchmarks/integration.py", "scvi_max_epochs": args.scvi_epochs,
               "sets": {}}
    results["sets"]["pbmc_cross_study"] = run_set("pbmc_cross_study", sn.datasets.pbmc_cross_study(),
                                                  args.scvi_epochs)
    results["sets"]["simulated_batches"] = run_set(
        "simulated_batches", sn.datasets.simulated_batches(n_cells=args.sim_cells, seed=0), args.scvi_epochs)
    for s in results["sets"].values():
        t = s["training"]
        s["epoch_time_ratio_scnapse_over_scvi"] = round(t["X_autoencoder"]["seconds_per_epoch"]
                                                       / t["X_scvi"]["seconds_per_epoch"], 3)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    from _common import write_results

    write_results(results, args.out)


if __name__ == "__main__":
    main()
