"""Helpers shared by the benchmarks: simulated counts and memory measurement."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from scipy import sparse


def simulate_counts(n_obs: int, n_vars: int = 2000, n_types: int = 10, seed: int = 0, chunk: int = 20_000):
    """Negative-binomial counts with cell-type structure, built chunk by chunk as CSR (float32).

    Each gene has a low base mean (most entries are zero, as in droplet data); each cell type
    raises 5 % of the genes eight-fold; library sizes vary log-normally. Returns (X, types).
    """
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 0.5, n_vars)
    up = np.ones((n_types, n_vars))
    for t in range(n_types):
        up[t, rng.choice(n_vars, n_vars // 20, replace=False)] = 8.0
    types = rng.integers(0, n_types, n_obs)
    blocks = []
    for start in range(0, n_obs, chunk):
        t = types[start : start + chunk]
        lib = rng.lognormal(0, 0.4, (len(t), 1))
        mean = base[None, :] * up[t] * lib
        r = 2.0
        counts = rng.negative_binomial(r, r / (r + mean)).astype(np.float32)
        blocks.append(sparse.csr_matrix(counts))
    X = sparse.vstack(blocks, format="csr")
    X.indices = X.indices.astype(np.int32)
    return X, types


def sparse_nbytes(X) -> int:
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process's resident memory every 20 ms while the block runs."""

    def __enter__(self):
        self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())
