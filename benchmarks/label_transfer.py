"""Label transfer across batches: train on one study of ``sn.datasets.pbmc_cross_study()``,
annotate the other, both directions; macro-F1 on the cell types the reference has.

    OMP_NUM_THREADS=1 python benchmarks/label_transfer.py [--seed 0]

Compares the classifier without ``batch_key``, with ``batch_key="batch"`` (per-batch centring)
and with ``batch_key="batch", batch_scale=True`` (per-batch centring and scaling); every run with
the defaults (seed 0). The query is annotated as one batch of its own (a batch the model never saw).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.metrics import f1_score

import scnapse as sn

VARIANTS = {"no batch_key": {}, "batch_key": {"batch_key": "batch"},
            "batch_key + batch_scale": {"batch_key": "batch", "batch_scale": True}}


def transfer(data, ref_batch: str, query_batch: str, options: dict, seed: int) -> dict:
    ref = data[data.obs["batch"] == ref_batch].copy()
    query = data[data.obs["batch"] == query_batch].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sn.tl.train_classifier(ref, labels_key="cell_type", seed=seed, progress=False, **options)
        sn.tl.annotate(query, model, min_confidence=0.0, min_typicality=0.0)
        sn.tl.annotate(query, model, key_added="called")  # defaults: Unassigned below 0.5 / 0.01
    known = set(model.classes)
    keep = query.obs["cell_type"].astype(str).isin(known).to_numpy()
    truth = query.obs["cell_type"].astype(str).to_numpy()[keep]
    pred = query.obs["predicted"].astype(str).to_numpy()[keep]
    labels = sorted(known & set(truth))
    called = query.obs["called"].astype(str).to_numpy()
    return {"macro_f1": f1_score(truth, pred, labels=labels, average="macro"),
            "accuracy": float(np.mean(truth == pred)),
            "unassigned_known": float(np.mean(called[keep] == "Unassigned")),
            "unassigned_novel": float(np.mean(called[~keep] == "Unassigned")) if (~keep).any() else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = sn.datasets.pbmc_cross_study()
    directions = [("pbmc68k", "pbmc160"), ("pbmc160", "pbmc68k")]
    print("| reference → query | method | macro-F1 (shared types) | accuracy | Unassigned, known types | "
          "Unassigned, types absent from the reference | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ref_batch, query_batch in directions:
        for name, options in VARIANTS.items():
            t0 = time.perf_counter()
            r = transfer(data, ref_batch, query_batch, options, args.seed)
            print(f"| {ref_batch} → {query_batch} | {name} | {r['macro_f1']:.3f} | {r['accuracy']:.3f} | "
                  f"{r['unassigned_known']:.1%} | {r['unassigned_novel']:.1%} | {time.perf_counter() - t0:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
