"""Autoencoder vs PCA and scVI: embedding quality, speed, and one epoch at a million cells.

    python benchmarks/embedding.py                 # all parts
    python benchmarks/embedding.py quality speed   # some parts
    python benchmarks/embedding.py --scale-cells 1000000 scale

quality: 15-NN label accuracy (stratified 5-fold) and best Leiden ARI (resolution 0.5 / 1.0) on
pbmc68k (bulk_labels; normalise + log1p), pbmc160 (cell_type; normalise + log1p + 2,000 HVGs)
and a simulated set none of the defaults were tuned on (3,000 cells × 1,000 genes, negative
binomial, 12 types in 3 families, 15 marker genes 4× up per type; normalise + log1p); and
guo_qpcr (stage; 428 cells × 48 genes, qPCR ΔCt as they are: real values, not counts; PCA
on the scaled ΔCt with 47 components, the most 48 genes allow, and with 16 = the autoencoder's
latent size; no counts, so no VAE row). ``--sets guo_qpcr`` runs one set.
PCA(50) runs on scaled log data; scVI (if installed) on the counts with its defaults (400 epochs);
the autoencoder runs with its DEFAULT settings on the log data (an mse autoencoder) and on the
counts (layer="counts": a negative-binomial VAE).
speed: mouse10k (10,000 cells × 1,000 genes): seconds per epoch at batch 128 with the same hidden
(128), latent (10) and batch size for the autoencoder and scVI, and inference cells/s.
scale: a simulated sparse count matrix (default 1,000,000 × 2,000): one epoch, peak memory.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scanpy as sc

sys.path.insert(0, str(Path(__file__).parent))
import scnapse as sn  # noqa: E402
from _common import PeakRSS, rss, simulate_counts, sparse_nbytes  # noqa: E402
from scnapse.tl._compare import knn_accuracy, leiden_ari  # noqa: E402

warnings.filterwarnings("ignore")
sn.settings.verbosity = logging.WARNING
DATA = Path(__file__).resolve().parents[1] / "sample_data"


def have_scvi() -> bool:
    try:
        import scvi  # noqa: F401

        return True
    except ImportError:
        return False


def simulate_types(n=3000, n_genes=1000, n_types=12, fold=4.0, seed=7):
    """Counts with weak, nested cell-type structure: 3 families (40 genes 3× up each) of 4 types
    (15 genes ``fold``× up each), negative binomial (r = 2), log-normal library sizes."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 0.5, n_genes)
    family = np.ones((3, n_genes))
    for f in range(3):
        family[f, rng.choice(n_genes, 40, replace=False)] = 3.0
    up = np.ones((n_types, n_genes))
    for t in range(n_types):
        up[t, rng.choice(n_genes, 15, replace=False)] = fold
    up *= family[np.arange(n_types) % 3]
    types = rng.integers(0, n_types, n)
    mean = base[None] * up[types] * rng.lognormal(0, 0.5, (n, 1))
    X = rng.negative_binomial(2.0, 2.0 / (2.0 + mean)).astype(np.float32)
    obs = pd.DataFrame({"type": pd.Categorical([f"t{t}" for t in types])}, index=[str(i) for i in range(n)])
    return ad.AnnData(sparse.csr_matrix(X), obs=obs)


def load(name):

    if name == "simulated":
        adata, labels = simulate_types(), "type"
    elif name == "guo_qpcr":  # real-valued ΔCt: no counts, no normalisation
        return sn.datasets.guo_qpcr(), "stage"
    elif name == "pbmc68k":
        adata, labels = sn.datasets.pbmc68k(), "bulk_labels"
    else:
        adata, labels = sn.datasets.pbmc160(), "cell_type"
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if name == "pbmc160":
        sc.pp.highly_variable_genes(adata, n_top_genes=2000)
        adata = adata[:, adata.var.highly_variable].copy()
    return adata, labels


def score(emb, labels):
    return knn_accuracy(emb, labels), leiden_ari(emb, labels)[0]


def quality(seeds=(0, 1, 2), scvi_seeds=(0,), sets=("pbmc68k", "pbmc160", "simulated", "guo_qpcr")):
    rows = []
    for name in sets:
        adata, key = load(name)
        y = adata.obs[key].astype(str).to_numpy()
        pca = adata.copy()
        sc.pp.scale(pca, max_value=10)
        n_pcs = min(50, pca.n_obs - 1, pca.n_vars - 1)
        sc.pp.pca(pca, n_comps=n_pcs)
        what = "scaled log" if "counts" in adata.layers else "scaled"
        rows.append((name, f"PCA({n_pcs}), {what}", *score(pca.obsm["X_pca"], y), 0.0))
        if "counts" not in adata.layers:  # features: PCA of the autoencoder's latent size too
            rows.append((name, f"PCA(16), {what}", *score(pca.obsm["X_pca"][:, :16], y), 0.0))
        if have_scvi() and "counts" in adata.layers:
            import scvi

            res = []
            for s in scvi_seeds:
                scvi.settings.seed = s
                a = adata.copy()
                scvi.model.SCVI.setup_anndata(a, layer="counts")
                m = scvi.model.SCVI(a)
                t = time.perf_counter()
                m.train(enable_progress_bar=False)
                res.append((*score(m.get_latent_representation(), y), time.perf_counter() - t))
            rows.append((name, f"scVI (defaults, 400 epochs; seeds {list(scvi_seeds)})", *np.mean(res, 0)))
        variants = (("scnapse autoencoder (defaults, log data: mse)", {}),
                    ("scnapse autoencoder (defaults, counts: nb VAE)", {"layer": "counts"}),
                    ("scnapse autoencoder, log data, pca_init=False", {"pca_init": False}))
        if "counts" not in adata.layers:
            variants = (("scnapse autoencoder (defaults: mse)", {}), ("scnapse autoencoder, scale=True", {"scale": True}),
                        ("scnapse autoencoder, pca_init=False", {"pca_init": False}))
        for label, options in variants:
            res = []
            for s in seeds:
                a = adata.copy()
                t = time.perf_counter()
                sn.tl.autoencoder(a, seed=s, progress=False, **options)
                res.append((*score(a.obsm["X_autoencoder"], y), time.perf_counter() - t))
            rows.append((name, label, *np.mean(res, 0)))
    print(f"\n## Embedding quality (autoencoder: mean of seeds {list(seeds)})\n")
    print("| data | method | 15-NN accuracy | best Leiden ARI | train s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.1f} |")


def speed(epochs=10, repeats=3):
    """Seconds per epoch (whole ``fit`` / ``train`` call, setup included, divided by the epochs)
    and inference cells/s; each measured ``repeats`` times, interleaved, best kept (the two cores
    are shared, so single timings swing by ±30 %)."""
    import anndata as ad

    adata = ad.read_h5ad(DATA / "mouse10k_counts.h5ad")
    n = adata.n_obs
    # warm-up: the first optimizer step of a process imports parts of torch (~1 s); time steady state
    sn.models.Autoencoder(10, max_epochs=1, seed=0).fit(adata[:512].copy(), progress=False)
    scvi = None
    if have_scvi():
        import scvi

        a = adata.copy()
        scvi.model.SCVI.setup_anndata(a)
        scvi.model.SCVI(a, n_hidden=128, n_latent=10).train(max_epochs=1, batch_size=128, train_size=1.0,
                                                            enable_progress_bar=False)  # warm-up too
    fits, infers, kinds = {}, {}, {}
    for _ in range(repeats):
        # mse: the default for log data; nb (a VAE): the default for these raw counts
        for cost in ("mse", "nb"):
            model = sn.models.Autoencoder(10, hidden=(128,), batch_size=128, max_epochs=epochs, early_stopping=0,
                                          validation_fraction=0.0, seed=0, cost=cost)
            t = time.perf_counter()
            model.fit(adata, progress=False)
            fits.setdefault(cost, []).append((time.perf_counter() - t) / epochs)
            model.transform(adata)  # warm-up
            t = time.perf_counter()
            for _ in range(5):
                model.transform(adata)
            infers.setdefault(cost, []).append(5 * n / (time.perf_counter() - t))
            kinds[cost] = "VAE" if model.variational else "autoencoder"
        if scvi is not None:
            m = scvi.model.SCVI(a, n_hidden=128, n_latent=10)
            t = time.perf_counter()
            m.train(max_epochs=epochs, batch_size=128, train_size=1.0, enable_progress_bar=False)
            fits.setdefault("scVI", []).append((time.perf_counter() - t) / epochs)
            m.get_latent_representation()  # warm-up
            t = time.perf_counter()
            for _ in range(5):
                m.get_latent_representation()
            infers.setdefault("scVI", []).append(5 * n / (time.perf_counter() - t))
    print(f"\n## Speed on mouse10k ({n} cells × {adata.n_vars} genes, batch 128, hidden 128, latent 10; "
          f"best of {repeats})\n")
    print("| method | s / epoch | train cells/s | inference cells/s |")
    print("| --- | --- | --- | --- |")
    best = {k: (min(fits[k]), max(infers[k])) for k in fits}
    for k, (epoch_s, inf) in best.items():
        label = "scVI" if k == "scVI" else f"scnapse {kinds[k]}, cost={k}"
        print(f"| {label} | {epoch_s:.3f} | {n / epoch_s:,.0f} | {inf:,.0f} |")
    if "scVI" in best:
        for cost in ("mse", "nb"):
            print(f"\ncost={cost}: {kinds[cost]} / scVI time per epoch **{best[cost][0] / best['scVI'][0]:.2f}×**, "
                  f"inference **{best[cost][1] / best['scVI'][1]:.1f}×** scVI's cells/s")


def scale(n_cells=1_000_000, n_genes=2000):
    import anndata as ad

    t = time.perf_counter()
    X, types = simulate_counts(n_cells, n_genes)
    sim_s = time.perf_counter() - t
    adata = ad.AnnData(X)
    size = sparse_nbytes(X)
    before = rss()
    model = sn.models.Autoencoder(10, max_epochs=1, early_stopping=0, seed=0)
    with PeakRSS() as mem:
        t = time.perf_counter()
        model.fit(adata, progress=False)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        emb = model.transform(adata)
        inf_s = time.perf_counter() - t
    print(f"\n## Scale: simulated {n_cells:,} × {n_genes} counts, {X.nnz:,} non-zeros "
          f"(simulated in {sim_s:.0f} s)\n")
    print("| sparse matrix | RSS before | peak RSS during fit + transform | peak / sparse size | "
          "one epoch (incl. input checks) | inference cells/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {size / 2**30:.2f} GiB | {before / 2**30:.2f} GiB | {mem.peak / 2**30:.2f} GiB | "
          f"{mem.peak / size:.2f}× (extra over the loaded matrix: {(mem.peak - before) / 2**30:.2f} GiB) | "
          f"{fit_s:.0f} s | {n_cells / inf_s:,.0f} |")
    assert emb.shape == (n_cells, 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["quality", "speed", "scale"])
    parser.add_argument("--scale-cells", type=int, default=1_000_000)
    parser.add_argument("--sets", nargs="+", default=["pbmc68k", "pbmc160", "simulated", "guo_qpcr"],
                        help="the sets of the quality part")
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}, device: {sn._settings.resolve_device('auto')}")
    if "quality" in args.parts:
        quality(sets=args.sets)
    if "speed" in args.parts:
        speed()
    if "scale" in args.parts:
        scale(args.scale_cells)
