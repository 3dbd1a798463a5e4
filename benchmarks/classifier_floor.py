"""How fast can *any* model label 100,000 cells × 2,000 genes on this machine?

    python benchmarks/classifier_floor.py

The lower bounds behind the classifier's speed target: log-normalising the non-zeros alone, that
plus the smallest useful model (a sparse product with a genes × 10 matrix, i.e. logistic
regression), and ``sn.tl.annotate`` end to end with logistic regression (``hidden=()``), one
64-unit layer, and the default MLP. Same simulated data as ``benchmarks/classifier.py``'s speed
part (``_common.simulate_counts``, 21.5 % non-zeros). Best of 3; run on an otherwise idle machine.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
import scnapse as sn  # noqa: E402
from _common import simulate_counts  # noqa: E402

warnings.filterwarnings("ignore")
sn.settings.verbosity = logging.WARNING


def best(f, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main(n_query=100_000, n_train=5_000):
    X, types = simulate_counts(n_query + n_train, 2000, seed=0)
    obs = pd.DataFrame({"type": pd.Categorical([f"t{t}" for t in types])}, index=[str(i) for i in range(len(types))])
    full = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(2000)]))
    ref, query = full[:n_train].copy(), full[n_train:].copy()
    Q = query.X
    weights = torch.randn(2000, 10)

    def lognorm():
        lib = np.asarray(Q.sum(1)).ravel()
        return np.log1p(Q.data / np.repeat(lib, np.diff(Q.indptr)) * 1e4).astype(np.float32)

    def lognorm_and_product():
        x = torch.sparse_csr_tensor(torch.from_numpy(Q.indptr.astype(np.int32)),
                                    torch.from_numpy(Q.indices.astype(np.int32)),
                                    torch.from_numpy(lognorm()), size=Q.shape)
        return x @ weights

    print(f"torch threads: {torch.get_num_threads()}; {n_query:,} cells × 2,000 genes, "
          f"{Q.nnz / Q.shape[0]:.0f} non-zeros per cell\n")
    print("| what | seconds | cells/s |")
    print("| --- | --- | --- |")
    for label, f in (("log-normalise the non-zeros (numpy)", lognorm),
                     ("… and multiply by a 2,000 × 10 matrix (torch sparse)", lognorm_and_product)):
        t = best(f)
        print(f"| {label} | {t:.3f} | {n_query / t:,.0f} |", flush=True)
    for hidden in ((), (64,), (256, 128)):
        model = sn.tl.train_classifier(ref, labels_key="type", progress=False, seed=0, max_epochs=5, hidden=hidden)
        sn.tl.annotate(query[:2000].copy(), model)  # warm-up
        t = best(lambda: sn.tl.annotate(query.copy(), model))
        name = "logistic regression" if not hidden else f"hidden={hidden}"
        print(f"| `sn.tl.annotate`, {name} | {t:.3f} | {n_query / t:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
