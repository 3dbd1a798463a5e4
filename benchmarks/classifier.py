"""Cell-type classifier benchmark: scnapse's MLP vs logistic regression vs CellTypist.

Accuracy: 5-fold stratified cross-validation (scikit-learn ``StratifiedKFold``, shuffled,
``random_state=0``) on ``pbmc68k`` (``bulk_labels``, 700 cells, 10 types) and ``pbmc160``
(``cell_type``, 160 cells, 8 types), macro-F1 and accuracy on the held-out fold:

* scnapse ``sn.tl.train_classifier`` with **default settings** on raw counts (seed 0);
* scikit-learn ``LogisticRegression`` (default C = 1, lbfgs, max_iter 1000) on log-normalised data
  scaled per gene (fitted on the training fold, clipped at ±10): CellTypist's method;
* CellTypist 1.7.1 itself (``celltypist.train`` with its defaults, ``celltypist.annotate`` without
  majority voting), when ``--celltypist-path`` points at a folder where it is installed with
  scikit-learn < 1.7 (``pip install --target DIR celltypist "scikit-learn==1.6.1" --no-deps``).

Standard errors: each cell is held out once, so the pooled out-of-fold predictions are scored
once more (macro-F1 and accuracy over all cells) with a bootstrap standard error over the held-out
cells (1,000 resamples), and the line "deep ≥ classical − 1 SE: yes/no" (deep = scnapse's MLP,
classical = logistic regression) is printed per set. The fold means keep their spread over folds
(``macro_f1_sd``) and get a standard error across folds too (``macro_f1_se_folds``: the sample sd
over the 5 folds / √5).

Real-valued features: ``guo_qpcr`` (428 mouse embryo cells × 48 genes, qPCR ΔCt, negative values;
``stage``, 6 classes) with scnapse's MLP (defaults, on ΔCt as it is: standardised inside), logistic
regression (standardised on the training fold) and a random forest (500 trees), 5-fold with cells
held out and 5-fold with whole embryos held out (``StratifiedGroupKFold``; SE by a bootstrap over
embryos). ``--skip-cv --skip-speed`` runs only this set and updates ``--out`` in place:

    python benchmarks/classifier.py --skip-cv --skip-speed --out benchmarks/results/classifier_cv.json

Speed: 100,000 simulated cells × 2,000 genes (``_common.simulate_counts``: negative binomial, 10
types), labelled by a model trained on 5,000 other simulated cells: cells per second of
``sn.tl.annotate`` end to end (gene matching, log-normalisation, probabilities, typicality,
writing ``obs``/``obsm``; best of 2, with 1 and with all torch threads, the faster reported) and of
``celltypist.annotate`` (best of 2), measured in the same run. Twice: on the
simulation as it is (~22 % non-zeros) and after binomial thinning of the counts to 30 % depth
(~9 % non-zeros, close to the 7 % of the real 10x mouse10k matrix), since scnapse's cost grows
with the non-zeros and CellTypist's (which densifies and scales) does not.

    python benchmarks/classifier.py --celltypist-path /tmp/ctlib --out benchmarks/results/classifier.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# -- CellTypist runs in a subprocess (it needs an older scikit-learn) ---------------------------
def celltypist_worker(job_file: str) -> None:
    import anndata as ad
    import celltypist

    job = json.loads(Path(job_file).read_text())
    results = []
    for task in job["tasks"]:
        train = ad.read_h5ad(task["train"])
        t0 = time.perf_counter()
        model = celltypist.train(train, labels=task["labels"], n_jobs=1, max_iter=task.get("max_iter"))
        fit_s = time.perf_counter() - t0
        query = ad.read_h5ad(task["query"])
        best = best_cpu = None
        for _ in range(task.get("repeats", 1)):
            t0, c0 = time.perf_counter(), time.process_time()
            res = celltypist.annotate(query, model=model, majority_voting=False)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best = dt if best is None else min(best, dt)
            best_cpu = dc if best_cpu is None else min(best_cpu, dc)
        results.append({"fit_seconds": fit_s, "predict_seconds": best, "predict_cpu_seconds": best_cpu,
                        "predicted": res.predicted_labels["predicted_labels"].astype(str).tolist()})
    Path(job["out"]).write_text(json.dumps({"results": results, "version": celltypist.__version__}))


def run_celltypist(tasks: list[dict], path: str | None, tmp: Path) -> dict | None:
    if not path:
        return None
    job = tmp / f"ct_job_{len(list(tmp.glob('ct_job_*')))}.json"
    out = job.with_suffix(".out.json")
    job.write_text(json.dumps({"tasks": tasks, "out": str(out)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([path, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "--celltypist-worker", str(job)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print("CellTypist failed:", proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.read_text())


def log_normalized(adata):
    import scanpy as sc

    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


# -- accuracy ----------------------------------------------------------------------------------
def cross_validate(name: str, adata, key: str, ct_path: str | None, tmp: Path) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    import scnapse as sn
    from scnapse.nn.classifier import expected_calibration_error

    y = adata.obs[key].astype(str).to_numpy()
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    log = log_normalized(adata)
    scores = {"scnapse MLP": [], "logistic regression": [], "CellTypist": []}
    oof = {k: np.empty(len(y), dtype=object) for k in scores}  # out-of-fold predictions, every cell once
    calibration = []  # scnapse: ECE before / after temperature scaling, on validation and test cells
    seconds = {k: 0.0 for k in scores}
    ct_tasks = []
    for i, (tr, te) in enumerate(folds):
        t0 = time.perf_counter()
        model = sn.tl.train_classifier(adata[tr].copy(), labels_key=key, progress=False, seed=0)
        test = adata[te].copy()
        pred = model.predict(test)
        seconds["scnapse MLP"] += time.perf_counter() - t0
        oof["scnapse MLP"][te] = np.asarray(pred).astype(str)
        logits = torch.cat([chunk for _, chunk, _ in model.iter_scores(test)])
        codes = torch.as_tensor([model.classes.index(c) for c in y[te]])
        temp = float(model.module.temperature)
        calibration.append([model.metrics["ece_before"], model.metrics["ece_after"],
                            expected_calibration_error(torch.softmax(logits, 1), codes),
                            expected_calibration_error(torch.softmax(logits / temp, 1), codes), temp])
        scores["scnapse MLP"].append((f1_score(y[te], pred, average="macro"), accuracy_score(y[te], pred)))

        t0 = time.perf_counter()
        xtr = log.X[tr].toarray()
        xte = log.X[te].toarray()
        mean, std = xtr.mean(0), xtr.std(0)
        std[std == 0] = 1
        clf = LogisticRegression(max_iter=1000).fit(np.clip((xtr - mean) / std, -10, 10), y[tr])
        pred = clf.predict(np.clip((xte - mean) / std, -10, 10))
        seconds["logistic regression"] += time.perf_counter() - t0
        oof["logistic regression"][te] = np.asarray(pred).astype(str)
        scores["logistic regression"].append((f1_score(y[te], pred, average="macro"), accuracy_score(y[te], pred)))

        if ct_path:
            log[tr].write_h5ad(tmp / f"{name}_{i}_train.h5ad")
            log[te].write_h5ad(tmp / f"{name}_{i}_test.h5ad")
            ct_tasks.append({"train": str(tmp / f"{name}_{i}_train.h5ad"),
                             "query": str(tmp / f"{name}_{i}_test.h5ad"), "labels": key})
    ct = run_celltypist(ct_tasks, ct_path, tmp)
    if ct:
        for (_, te), r in zip(folds, ct["results"]):
            pred = np.asarray(r["predicted"])
            oof["CellTypist"][te] = pred
            scores["CellTypist"].append((f1_score(y[te], pred, average="macro"), accuracy_score(y[te], pred)))
            seconds["CellTypist"] += r["fit_seconds"] + r["predict_seconds"]
    c = np.asarray(calibration).mean(0)
    out = {"scnapse calibration": {"ece_validation_before": float(c[0]), "ece_validation_after": float(c[1]),
                                   "ece_test_before": float(c[2]), "ece_test_after": float(c[3]),
                                   "mean_temperature": float(c[4])}}
    print(f"{name:8s} scnapse ECE before → after temperature scaling: validation {c[0]:.3f} → {c[1]:.3f}, "
          f"test folds {c[2]:.3f} → {c[3]:.3f} (mean T {c[4]:.2f})", flush=True)
    for method, s in scores.items():
        if not s:
            continue
        s = np.asarray(s)
        out[method] = {"macro_f1": float(s[:, 0].mean()), "macro_f1_sd": float(s[:, 0].std()),
                       "macro_f1_se_folds": float(s[:, 0].std(ddof=1) / np.sqrt(len(s))),
                       "accuracy": float(s[:, 1].mean()), "per_fold_macro_f1": s[:, 0].round(4).tolist(),
                       "seconds": round(seconds[method], 1)}
        print(f"{name:8s} {method:20s} macro-F1 {s[:, 0].mean():.3f} ± {s[:, 0].std():.3f}  "
              f"accuracy {s[:, 1].mean():.3f}  ({seconds[method]:.0f} s)", flush=True)
    # standard errors over the held-out cells: bootstrap of the pooled out-of-fold predictions
    from _common import bootstrap_se, versus

    methods = [m for m in scores if scores[m]]
    stats = {metric: bootstrap_se(lambda idx, fn=fn: {m: fn(y[idx[0]], oof[m][idx[0]].astype(str)) for m in methods},
                                  [len(y)], n_boot=1000)
             for metric, fn in (("macro-F1", lambda t, p: f1_score(t, p, average="macro")),
                                ("accuracy", accuracy_score))}
    for m in methods:
        out[m]["pooled_macro_f1"], out[m]["pooled_macro_f1_se"] = stats["macro-F1"][m][:2]
        out[m]["pooled_accuracy"], out[m]["pooled_accuracy_se"] = stats["accuracy"][m][:2]
        print(f"{name:8s} {m:20s} pooled out-of-fold macro-F1 {stats['macro-F1'][m][0]:.3f} ± "
              f"{stats['macro-F1'][m][1]:.3f}, accuracy {stats['accuracy'][m][0]:.3f} ± {stats['accuracy'][m][1]:.3f} "
              f"(bootstrap SE over {len(y)} held-out cells)", flush=True)
    lines = [versus(st, "scnapse MLP", "logistic regression", metric) for metric, st in stats.items()]
    out["versus"] = {"line": " · ".join(line for line, _ in lines), "deep_within_1se": lines[0][1],
                     "se": f"bootstrap over the {len(y)} cells (pooled out-of-fold predictions)"}
    print(f"{name:8s} {out['versus']['line']}", flush=True)
    return out


# -- accuracy on real-valued features (not counts) -----------------------------------------------
def cross_validate_features(name: str, adata, key: str, group_key: str | None = None) -> dict:
    """scnapse's MLP (defaults, on ``X`` as it is) vs logistic regression (standardised on the
    training fold) vs a random forest on a matrix of real-valued features, 5-fold stratified; with
    ``group_key`` also with whole groups held out (``StratifiedGroupKFold``), scored with a
    bootstrap over the groups (cells of one group are not independent)."""
    from _common import bootstrap_se, versus
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    import scnapse as sn

    y = adata.obs[key].astype(str).to_numpy()
    X = np.asarray(adata.X, dtype=np.float64)
    groups = None if group_key is None else adata.obs[group_key].astype(str).to_numpy()
    splits = {"cells held out": StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)}
    if groups is not None:
        splits[f"{group_key}s held out"] = StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, groups)
    methods = ("scnapse MLP", "logistic regression", "random forest")
    out = {"n_cells": len(y), "n_features": adata.n_vars, "classes": sorted(set(y)),
           "x_min": float(X.min()), "x_max": float(X.max())}
    for split, folds in splits.items():
        oof = {m: np.empty(len(y), dtype=object) for m in methods}
        folds_scores = {m: [] for m in methods}
        seconds = dict.fromkeys(methods, 0.0)
        kinds = set()
        for tr, te in folds:
            t0 = time.perf_counter()
            model = sn.tl.train_classifier(adata[tr].copy(), labels_key=key, progress=False, seed=0)
            oof["scnapse MLP"][te] = np.asarray(model.predict(adata[te].copy())).astype(str)
            seconds["scnapse MLP"] += time.perf_counter() - t0
            kinds.add(model.input_kind)
            t0 = time.perf_counter()
            mean, std = X[tr].mean(0), X[tr].std(0)
            std[std == 0] = 1
            clf = LogisticRegression(max_iter=1000).fit((X[tr] - mean) / std, y[tr])
            oof["logistic regression"][te] = clf.predict((X[te] - mean) / std)
            seconds["logistic regression"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            rf = RandomForestClassifier(n_estimators=500, random_state=0, n_jobs=1).fit(X[tr], y[tr])
            oof["random forest"][te] = rf.predict(X[te])
            seconds["random forest"] += time.perf_counter() - t0
            for m in methods:
                p = oof[m][te].astype(str)
                folds_scores[m].append((f1_score(y[te], p, average="macro"), accuracy_score(y[te], p)))
        # bootstrap over the held-out cells, or over the held-out groups (all cells of a drawn group)
        if groups is not None and split != "cells held out":
            names, codes = np.unique(groups, return_inverse=True)
            members = [np.flatnonzero(codes == g) for g in range(len(names))]
            expand = lambda idx: np.concatenate([members[g] for g in idx[0]])  # noqa: E731
            sizes, unit = [len(names)], f"{len(names)} {group_key}s"
        else:
            expand, sizes, unit = (lambda idx: idx[0]), [len(y)], f"{len(y)} cells"
        stats = {metric: bootstrap_se(lambda idx, fn=fn: {m: fn(y[expand(idx)], oof[m][expand(idx)].astype(str))
                                                          for m in methods}, sizes, n_boot=1000)
                 for metric, fn in (("macro-F1", lambda t, p: f1_score(t, p, average="macro")),
                                    ("accuracy", accuracy_score))}
        row = {"input_kind": sorted(kinds), "se": f"bootstrap over the {unit} (pooled out-of-fold predictions)"}
        for m in methods:
            s = np.asarray(folds_scores[m])
            row[m] = {"pooled_macro_f1": stats["macro-F1"][m][0], "pooled_macro_f1_se": stats["macro-F1"][m][1],
                      "pooled_accuracy": stats["accuracy"][m][0], "pooled_accuracy_se": stats["accuracy"][m][1],
                      "macro_f1": float(s[:, 0].mean()), "macro_f1_sd": float(s[:, 0].std()),
                      "per_fold_macro_f1": s[:, 0].round(4).tolist(), "seconds": round(seconds[m], 1)}
            print(f"{name} ({split}) {m:20s} macro-F1 {stats['macro-F1'][m][0]:.3f} ± {stats['macro-F1'][m][1]:.3f}, "
                  f"accuracy {stats['accuracy'][m][0]:.3f} ± {stats['accuracy'][m][1]:.3f} (SE over {unit}; "
                  f"{seconds[m]:.0f} s)", flush=True)
        row["versus"] = {c: " · ".join(versus(st, "scnapse MLP", c, metric)[0] for metric, st in stats.items())
                         for c in methods[1:]}
        for line in row["versus"].values():
            print(f"{name} ({split}) {line}", flush=True)
        print(f"{name} ({split}) scnapse input kind: {sorted(kinds)}", flush=True)
        out[split] = row
    return out


# -- speed -------------------------------------------------------------------------------------
def speed(ct_path: str | None, tmp: Path, n_query: int, n_train: int = 5000) -> dict:
    import anndata as ad
    import pandas as pd
    import torch
    from _common import simulate_counts

    import scnapse as sn

    X, types = simulate_counts(n_query + n_train, 2000, seed=0)
    genes = [f"g{i}" for i in range(2000)]
    obs = pd.DataFrame({"type": pd.Categorical([f"t{t}" for t in types])})
    obs.index = obs.index.astype(str)
    full = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))
    out = {"torch_threads": torch.get_num_threads()}
    rng = np.random.default_rng(1)
    for label, depth in (("simulated", 1.0), ("thinned to 30% depth", 0.3)):
        data = full.copy()
        if depth < 1:
            data.X = data.X.copy()
            data.X.data = rng.binomial(data.X.data.astype(np.int64), depth).astype(np.float32)
            data.X.eliminate_zeros()
        ref, query = data[:n_train].copy(), data[n_train:].copy()
        density = query.X.nnz / (query.n_obs * query.n_vars)
        model = sn.tl.train_classifier(ref, labels_key="type", progress=False, seed=0, max_epochs=5)
        sn.tl.annotate(query[:2000].copy(), model)  # warm up
        threads = torch.get_num_threads()
        by_threads = {}
        for n_threads in sorted({1, threads}):
            torch.set_num_threads(n_threads)
            wall = cpu = np.inf
            for _ in range(2):
                q = query.copy()
                t0, c0 = time.perf_counter(), time.process_time()
                sn.tl.annotate(q, model)
                wall = min(wall, time.perf_counter() - t0)
                cpu = min(cpu, time.process_time() - c0)
            by_threads[n_threads] = (wall, cpu)
        torch.set_num_threads(threads)
        # the faster setting (on a busy machine one thread avoids OpenMP's waits on small ops)
        best_threads = min(by_threads, key=lambda k: by_threads[k][0])
        best, best_cpu = by_threads[best_threads]
        acc = float(np.mean(q.obs["predicted"].astype(str).to_numpy() == query.obs["type"].astype(str).to_numpy()))
        row = {"density": round(float(density), 4), "nnz_per_cell": round(float(density * 2000), 1),
               "scnapse_seconds": round(best, 3), "scnapse_cells_per_s": round(n_query / best),
               "scnapse_cpu_seconds": round(best_cpu, 3), "scnapse_cells_per_cpu_s": round(n_query / best_cpu),
               "scnapse_accuracy": acc, "scnapse_torch_threads": best_threads,
               "scnapse_cells_per_s_by_threads": {str(k): round(n_query / v[0]) for k, v in by_threads.items()}}
        if ct_path:
            log_normalized(ref).write_h5ad(tmp / "speed_train.h5ad")
            log_normalized(query).write_h5ad(tmp / "speed_query.h5ad")
            ct = run_celltypist([{"train": str(tmp / "speed_train.h5ad"), "query": str(tmp / "speed_query.h5ad"),
                                  "labels": "type", "max_iter": 200, "repeats": 2}], ct_path, tmp)
            if ct:
                r = ct["results"][0]
                row.update({"celltypist_seconds": round(r["predict_seconds"], 3),
                            "celltypist_cells_per_s": round(n_query / r["predict_seconds"]),
                            "speedup": round(r["predict_seconds"] / best, 1),
                            "celltypist_cpu_seconds": round(r["predict_cpu_seconds"], 3),
                            "celltypist_cells_per_cpu_s": round(n_query / r["predict_cpu_seconds"]),
                            "speedup_cpu": round(r["predict_cpu_seconds"] / best_cpu, 1)})
        out[label] = row
        print(f"speed ({label}, {row['nnz_per_cell']} non-zeros/cell): scnapse {row['scnapse_cells_per_s']:,} cells/s "
              f"({row['scnapse_cells_per_s_by_threads']} by torch threads)"
              + (f", CellTypist {row['celltypist_cells_per_s']:,} cells/s, ×{row['speedup']}"
                 if "speedup" in row else "")
              + f"; per CPU second: scnapse {row['scnapse_cells_per_cpu_s']:,}"
              + (f", CellTypist {row['celltypist_cells_per_cpu_s']:,}, ×{row['speedup_cpu']}" if "speedup" in row else ""),
              flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--celltypist-path", default=None,
                        help="folder where celltypist and scikit-learn<1.7 are installed (pip --target)")
    parser.add_argument("--celltypist-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-query", type=int, default=100_000)
    parser.add_argument("--skip-cv", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-features", action="store_true", help="skip the qPCR (real-valued features) set")
    parser.add_argument("--out", default=str(HERE / "results" / "classifier.json"))
    args = parser.parse_args()
    if args.celltypist_worker:
        return celltypist_worker(args.celltypist_worker)

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(HERE))
    import scnapse as sn

    sn.settings.verbosity = 30
    results = {}
    if Path(args.out).exists() and (args.skip_cv or args.skip_speed or args.skip_features):  # update the other part in place
        results = json.loads(Path(args.out).read_text())
    results.update({"machine": f"{os.cpu_count()} CPU cores (shared)", "celltypist": bool(args.celltypist_path)})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_cv:
            results["pbmc68k"] = cross_validate("pbmc68k", sn.datasets.pbmc68k(), "bulk_labels", args.celltypist_path, tmp)
            results["pbmc160"] = cross_validate("pbmc160", sn.datasets.pbmc160(), "cell_type", args.celltypist_path, tmp)
        if not args.skip_features:
            results["guo_qpcr"] = cross_validate_features("guo_qpcr", sn.datasets.guo_qpcr(), "stage", "embryo")
        if not args.skip_speed:
            results["speed"] = speed(args.celltypist_path, tmp, args.n_query)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
