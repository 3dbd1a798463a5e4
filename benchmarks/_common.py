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


# -- standard errors over held-out cells ------------------------------------------------------------
def bootstrap_se(score, sizes, n_boot: int = 1000, seed: int = 0) -> dict:
    """Bootstrap standard errors over held-out samples.

    ``score(indices)`` gets one index array per held-out set (``sizes[k]`` samples each; one set
    for pooled out-of-fold predictions, one per random draw otherwise) and returns ``{method:
    score}``; a bootstrap replicate resamples every held-out set with replacement. Returns
    ``{method: (point estimate, standard error, replicates)}``; the point estimate is ``score``
    on the samples as they are. Replicates in which a score is undefined (e.g. ROC AUC on one
    class) are skipped."""
    rng = np.random.default_rng(seed)
    point = score([np.arange(n) for n in sizes])
    reps = {k: [] for k in point}
    for _ in range(n_boot):
        try:
            s = score([rng.integers(0, n, n) for n in sizes])
        except ValueError:
            continue
        for k, v in s.items():
            reps[k].append(v)
    return {k: (float(point[k]), float(np.std(reps[k], ddof=1)), np.asarray(reps[k])) for k in point}


def versus(stats: dict, deep: str, classical: str, metric: str, higher_is_better: bool = True) -> tuple[str, bool]:
    """The line "deep ≥ classical − 1 SE: yes/no" (for a loss: "deep ≤ classical + 1 SE"), with the
    classical score's standard error and the paired bootstrap difference, from :func:`bootstrap_se`."""
    (d, d_se, d_reps), (c, c_se, c_reps) = stats[deep], stats[classical]
    ok = d >= c - c_se if higher_is_better else d <= c + c_se
    n = min(len(d_reps), len(c_reps))
    diff_se = float(np.std(d_reps[:n] - c_reps[:n], ddof=1))
    sign = "≥ classical − 1 SE" if higher_is_better else "≤ classical + 1 SE"
    line = (f"{metric}: {deep} {d:.4g} ± {d_se:.2g}, {classical} {c:.4g} ± {c_se:.2g} "
            f"(difference {d - c:+.3g} ± {diff_se:.2g}); deep {sign}: {'yes' if ok else 'no'}")
    return line, bool(ok)


def write_results(results: dict, out) -> None:
    """Add the package versions to ``results`` and write them as JSON to ``out`` (folders made)."""
    import json
    from pathlib import Path

    from scnapse.train.repro import package_versions

    results["versions"] = package_versions()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out}" + (f" ({results['seconds']} s)" if "seconds" in results else ""))
