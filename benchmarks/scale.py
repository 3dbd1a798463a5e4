"""Scale benchmark: the default autoencoder on simulated counts, in memory and out of core.

    python benchmarks/scale.py 100000                       # in memory
    python benchmarks/scale.py 1000000
    python benchmarks/scale.py 5000000 --backed /tmp/scale_5m.h5ad   # written in chunks, then backed
    python benchmarks/scale.py 100000 --device cuda --precision bf16  # on a GPU

Each run is one size in a fresh process (so that peak resident memory means something) and
prints one markdown table row; ``--json FILE`` appends the figures as a JSON line.

Counts: negative binomial with 10 cell types (``_common.simulate_counts``, ~430 non-zeros per
cell out of 2,000 genes). Simulating every cell afresh costs ~1 ms per cell on this machine, so
``--pool`` distinct cells are simulated and the matrix is built from rows drawn (with
replacement) from that pool: the same sparsity, the same cost per cell for training.

Measured: one training epoch (seconds; the ``fit`` total also includes the chunked input checks),
inference cells/s (``transform``: chunks of 8,192 rows under ``torch.inference_mode``), and the
process's peak resident memory during fit + transform.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))
from _common import PeakRSS, rss, simulate_counts, sparse_nbytes  # noqa: E402


def pooled_counts(n_obs: int, n_vars: int, pool: int, seed: int = 0, chunk: int = 100_000):
    """Yield CSR blocks of ``n_obs`` cells drawn from ``pool`` simulated cells."""
    P, _ = simulate_counts(min(pool, n_obs), n_vars, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for start in range(0, n_obs, chunk):
        rows = rng.integers(0, P.shape[0], min(chunk, n_obs - start))
        block = P[rows]
        block.indices = block.indices.astype(np.int32)
        yield block


def write_backed(path: Path, n_obs: int, n_vars: int, pool: int) -> tuple[float, int]:
    """Write an .h5ad whose X is appended block by block (never all in memory)."""
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    t = time.perf_counter()
    nnz = 0
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", pd.DataFrame(index=pd.Index(np.arange(n_obs).astype(str))))
        write_elem(f, "var", pd.DataFrame(index=pd.Index([f"g{j}" for j in range(n_vars)])))
        for key in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(f, key, {})
        ds = None
        for block in pooled_counts(n_obs, n_vars, pool):
            nnz += block.nnz
            if ds is None:
                block.indptr = block.indptr.astype(np.int64)  # > 2^31 non-zeros in all
                write_elem(f, "X", block)
                ds = sparse_dataset(f["X"])
            else:
                ds.append(block)
    os.replace(tmp, path)
    return time.perf_counter() - t, nnz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cells", type=int)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backed", help="write the counts to this .h5ad and train on it backed")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing --backed file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cost", default=None,
                        help="the autoencoder's cost (default: its own choice, a negative-binomial VAE for counts)")
    parser.add_argument("--json", help="append the figures to this JSON-lines file")
    parser.add_argument("--train-seconds", type=float,
                        help="stop training after this long (cancel) and extrapolate the epoch from the "
                             "measured training rate; the input checks and inference still cover every cell")
    args = parser.parse_args()

    import anndata as ad
    import torch

    import scnapse as sn

    sn.settings.verbosity = 30
    n, g = args.cells, args.genes
    t_start = time.perf_counter()

    def phase(what):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {what}", file=sys.stderr, flush=True)

    rec = {"cells": n, "genes": g, "mode": "backed" if args.backed else "in memory", "device": args.device,
           "precision": args.precision, "torch_threads": torch.get_num_threads(), "epochs": args.epochs}
    if args.backed:
        path = Path(args.backed)
        if not (args.reuse and path.exists()):
            rec["write_s"], rec["nnz"] = write_backed(path, n, g, args.pool)
        rec["file_gib"] = path.stat().st_size / 2**30
        phase(f"wrote {path} ({rec['file_gib']:.1f} GiB)")
        adata = sn.read_backed(path)
        rec["matrix_gib"] = rec["file_gib"]
    else:
        t = time.perf_counter()
        X = sparse.vstack(list(pooled_counts(n, g, args.pool)), format="csr")
        X.indices = X.indices.astype(np.int32)
        rec["simulate_s"] = time.perf_counter() - t
        rec["nnz"] = int(X.nnz)
        rec["matrix_gib"] = sparse_nbytes(X) / 2**30
        adata = ad.AnnData(X)
        phase(f"simulated {n} cells ({rec['matrix_gib']:.2f} GiB sparse)")
    rec["rss_before_gib"] = rss() / 2**30
    model = sn.models.Autoencoder(16, max_epochs=args.epochs, early_stopping=0, seed=0, device=args.device,
                                  batch_size=args.batch_size, cost=args.cost)
    # count training steps (benchmark instrumentation only: wraps the model's step function)
    steps = {"n": 0, "cells": 0, "t0": None, "t1": None}
    make_step = model._step

    def counting_step(cost):
        inner = make_step(cost)

        def step(module, batch, training):
            if training:
                now = time.perf_counter()
                steps["t0"] = steps["t0"] or now
                steps["n"] += 1
                steps["cells"] += batch["x"].shape[0]
                steps["t1"] = now
            return inner(module, batch, training)

        return step

    model._step = counting_step
    cancel = threading.Event()
    if args.train_seconds:
        def stop_later():
            while steps["t0"] is None:
                time.sleep(0.5)
            time.sleep(args.train_seconds)
            cancel.set()

        threading.Thread(target=stop_later, daemon=True).start()
    with PeakRSS() as mem:
        t = time.perf_counter()
        model.fit(adata, progress=False, precision=args.precision, cancel=cancel)
        rec["fit_s"] = time.perf_counter() - t
        if model.history.seconds:
            rec["epoch_s"] = float(np.mean(model.history.seconds))
        else:  # cancelled inside the first epoch: extrapolate from the measured steps
            rate = (steps["cells"] - args.batch_size) / max(steps["t1"] - steps["t0"], 1e-9)
            rec["epoch_s"] = model.params["n_train"] / rate
            rec["epoch_extrapolated_from_cells"] = steps["cells"]
        phase(f"trained ({rec['fit_s']:.0f} s)")
        t = time.perf_counter()
        emb = model.transform(adata)
        rec["transform_s"] = time.perf_counter() - t
    assert emb.shape == (n, 16) and np.isfinite(emb).all()
    rec["train_cells_per_s"] = model.params["n_train"] / rec["epoch_s"]
    rec["inference_cells_per_s"] = n / rec["transform_s"]
    rec["peak_rss_gib"] = mem.peak / 2**30
    rec["peak_over_matrix"] = rec["peak_rss_gib"] / rec["matrix_gib"]
    rec["device_name"] = model.params["environment"].get("device_name", model.params["device"])
    rec["model"] = f"{'VAE' if model.variational else 'autoencoder'}, cost={model.cost}"
    if args.backed:
        adata.file.close()
    extrap = "*" if "epoch_extrapolated_from_cells" in rec else ""
    print(f"| {n:,} | {rec['mode']} | {rec['matrix_gib']:.2f} GiB | {rec['epoch_s']:.1f}{extrap} | "
          f"{rec['train_cells_per_s']:,.0f} | {rec['fit_s']:.1f} | {rec['inference_cells_per_s']:,.0f} | "
          f"{rec['peak_rss_gib']:.2f} GiB ({rec['peak_over_matrix']:.2f}×) | {rec['device_name']} |")
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
