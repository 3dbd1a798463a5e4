"""Hyperparameter search for the cell classifier on pbmc68k: TPE vs random search vs a grid of the
same number of trials. Reports the best validation macro-F1 reached after k trials.

    python benchmarks/tuning.py            # 24 trials per sampler
    python benchmarks/tuning.py --trials 12
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import scanpy as sc

import scnapse as sn

warnings.filterwarnings("ignore")
sn.settings.verbosity = logging.WARNING

SPACE = {
    "lr": {"log_uniform": [1e-4, 3e-2]},
    "l2": {"log_uniform": [1e-6, 1e-2]},
    "dropout": {"uniform": [0.0, 0.6]},
    "hidden": {"choice": [[64], [256, 128], [512, 256]]},
}


def main(trials: int, seed: int):
    adata = sn.datasets.pbmc68k()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    curves = {}
    for sampler in ("tpe", "random", "grid"):
        t = time.perf_counter()
        sn.tl.tune(adata, space=SPACE, step="classifier", labels_key="bulk_labels", n_trials=trials,
                   sampler=sampler, seed=seed, fixed={"max_epochs": 100}, prune=sampler != "grid",
                   key_added=f"tune_{sampler}")
        rec = adata.uns[f"tune_{sampler}"]
        best = rec["trials"]["best_so_far"].ffill().to_numpy()
        curves[sampler] = (best, rec["n_pruned"], time.perf_counter() - t, dict(rec["best_params"]))
    marks = sorted({k for k in (1, 3, 6, 12, 24, 48, trials) if k <= trials})
    print(f"\n## Tuning the classifier on pbmc68k (validation macro-F1; seed {seed})\n")
    print("| sampler | " + " | ".join(f"best after {k}" for k in marks) + " | pruned | seconds |")
    print("| --- | " + " | ".join("---" for _ in marks) + " | --- | --- |")
    for sampler, (best, pruned, secs, _) in curves.items():
        vals = [f"{best[min(k, len(best)) - 1]:.3f}" if len(best) else "-" for k in marks]
        print(f"| {sampler} | " + " | ".join(vals) + f" | {pruned} | {secs:.0f} |")
    for sampler, (*_, params) in curves.items():
        print(f"\n{sampler} best: {params}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.trials, args.seed)
