"""GRU/LSTM sequence models vs simple baselines, on synthetic dynamics and real time courses.

    python benchmarks/timecourse.py                      # every task
    python benchmarks/timecourse.py synth_classify tgmm_forecast   # some tasks

Classification (same splits for every method): the RNN (bidirectional LSTM) vs a random forest on
the flattened padded sequence (+ length) and a random forest on summary features (per feature:
mean, std, min, max, first, last, slope; + length). Forecasting (the last ``horizon`` steps of
held-out sequences hidden, forecast from the rest): the RNN (GRU seq2seq) vs persistence (repeat
the last value) and a linear autoregressive model (ridge regression from the last ``p`` steps of
every feature to the next ``horizon`` steps, fitted on the same training windows as the RNN).

Tasks
-----
synth_classify   two oscillation frequencies (0.08 vs 0.12 cycles/step), random amplitude, phase,
                 offset and length 20–50, noise sd 0.3; 600 train / 400 test sequences. Accuracy.
synth_classify_noisy   the same with noise sd 0.8.
synth_embed      400 oscillations (noise 0.3), no labels in training: 5-NN accuracy (5-fold) of the
                 frequency class on the RNN autoencoder's code vs PCA of the flattened sequences and
                 the summary features.
synth_forecast   damped oscillations, random frequency/damping/amplitude; 400 / 200 sequences,
                 horizon 5. Mean squared error.
tgmm_divides     Mastodon tgmm-mini: 212 track branches; does the branch end in a division (53)?
                 Stratified 5-fold cross-validation. Accuracy, balanced accuracy, ROC AUC.
tgmm_forecast    the same branches (≥ 8 steps): intensity mean and volume, horizon 3; 70/30 split by
                 branch. MSE on standardised features.
hsmm_forecast    HSMM myoblast time course (0/24/48/72 h, one snapshot per cell): cells split 50/50
                 per time point, PCA (10 PCs) fitted on training cells, pseudo-replicates of 10 cells
                 per time point (200 train / 100 test, each from its own cells); forecast 72 h from
                 0–48 h. MSE in PC space.

Standard errors (``±``): bootstrap over the held-out samples (1,000 resamples; test sequences,
or the pooled out-of-fold predictions for tgmm_divides); for every task with a classical
baseline a line "deep ≥ classical − 1 SE: yes/no" (for MSE: "deep ≤ classical + 1 SE"), with the
classical score's standard error and the paired bootstrap difference. The synthetic tasks use the
benchmark's RNN settings (``RNN_CLF`` / ``RNN_FC``), the real sets the steps' defaults.

Prints a Markdown table and writes ``benchmarks/results/timecourse.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)  # small recurrent nets: one thread is fastest (and the machine is shared)

import anndata as ad  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

import scnapse as sn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bootstrap_se, versus  # noqa: E402

sn.settings.verbosity = 30
sn.settings.n_threads = 1  # the steps set their own thread count from this
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
# max_epochs: the default (about 3,000 optimizer steps); early stopping on a 15 % validation split
RNN_CLF = dict(cell="lstm", bidirectional=True, hidden=(32,), lr=3e-3, batch_size=32, early_stopping=10,
               validation_fraction=0.15, progress=False, seed=0)
RNN_FC = dict(cell="gru", hidden=(32,), lr=3e-3, batch_size=128, early_stopping=10, validation_fraction=0.15,
              progress=False, seed=0)
# the real sets: the steps' defaults (class_weight="balanced" for the imbalanced divisions task)
REAL_CLF = dict(class_weight="balanced", progress=False, seed=0)
REAL_FC = dict(progress=False, seed=0)
N_BOOT = 1000  # bootstrap resamples of the held-out samples for standard errors


# -- features for the baselines ------------------------------------------------------------------------
def flattened(s: sn.ts.Sequences) -> np.ndarray:
    return np.concatenate([s.x.reshape(s.n, -1), s.lengths[:, None]], axis=1)


def summary(s: sn.ts.Sequences) -> np.ndarray:
    out = []
    for i in range(s.n):
        x = s.x[i, : s.lengths[i]].astype(np.float64)
        t = np.arange(len(x))
        slope = np.polyfit(t, x, 1)[0] if len(x) > 1 else np.zeros(x.shape[1])
        out.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), x[0], x[-1], slope, [len(x)]]))
    return np.asarray(out)


def random_forest(Xtr, ytr, Xte, seed=0):
    rf = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1).fit(Xtr, ytr)
    return rf.predict(Xte), rf.predict_proba(Xte)


def classify_scores(y, pred, proba=None, positive=None):
    out = {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred)}
    if proba is not None and positive is not None:
        out["roc_auc"] = roc_auc_score(np.asarray(y) == positive, proba)
    return {k: round(float(v), 4) for k, v in out.items()}


# -- forecasting helpers -------------------------------------------------------------------------------
def hide_last(adata, horizon):
    s = sn.ts.get_sequences(adata)
    L = s.lengths
    cut = adata.copy()
    cut.obs["length"] = L - horizon
    truth = np.stack([s.x[i, L[i] - horizon : L[i]] for i in range(s.n)])
    return cut, truth


def windows(s: sn.ts.Sequences, p: int, horizon: int, cuts="all"):
    """(history of the last p steps, edge-padded, flattened; next horizon steps) for every cut."""
    X, Y = [], []
    for i in range(s.n):
        L = s.lengths[i]
        cs = range(1, L - horizon + 1) if cuts == "all" else [L - horizon]
        for c in cs:
            hist = s.x[i, max(0, c - p) : c]
            if len(hist) < p:
                hist = np.concatenate([np.repeat(hist[:1], p - len(hist), 0), hist])
            X.append(hist.ravel())
            Y.append(s.x[i, c : c + horizon].ravel())
    return np.asarray(X), np.asarray(Y)


def linear_ar(train, test_cut, horizon, p=8):
    s_tr = sn.ts.get_sequences(train)
    X, Y = windows(s_tr, p, horizon)
    model = Ridge(alpha=1e-2).fit(X, Y)
    s_te = sn.ts.get_sequences(test_cut)
    Xte = []
    for i in range(s_te.n):
        L = s_te.lengths[i]
        hist = s_te.x[i, max(0, L - p) : L]
        if len(hist) < p:
            hist = np.concatenate([np.repeat(hist[:1], p - len(hist), 0), hist])
        Xte.append(hist.ravel())
    return model.predict(np.asarray(Xte)).reshape(s_te.n, horizon, -1)


def persistence(test_cut, horizon):
    s = sn.ts.get_sequences(test_cut)
    last = s.x[np.arange(s.n), s.lengths - 1]
    return np.repeat(last[:, None, :], horizon, axis=1)


def forecast_task(train, test, horizon, p=8, scale=None, rnn_options=None):
    """MSE of each forecaster on the held-out sequences, with its bootstrap standard error over
    those sequences, and the line "deep ≤ classical + 1 SE" (classical = linear AR)."""
    cut, truth = hide_last(test, horizon)
    scale = np.ones(truth.shape[2]) if scale is None else scale
    t0 = time.perf_counter()
    fc = sn.tl.train_forecaster(train, horizon=horizon, **(rnn_options or RNN_FC))
    seconds = time.perf_counter() - t0
    ar, rnn = f"linear AR({p})", "RNN (GRU seq2seq)"
    preds = {"persistence": persistence(cut, horizon), ar: linear_ar(train, cut, horizon, p), rnn: fc.forecast(cut)}
    per_seq = {name: (((pr - truth) / scale) ** 2).mean(axis=(1, 2)) for name, pr in preds.items()}
    stats = bootstrap_se(lambda idx: {k: float(v[idx[0]].mean()) for k, v in per_seq.items()}, [len(truth)],
                         n_boot=N_BOOT)
    res = {name: {"mse": round(stats[name][0], 5), "mse_se": round(stats[name][1], 5)} for name in preds}
    res[rnn]["train_seconds"] = round(seconds, 1)
    res[rnn]["epochs"] = fc.history.epoch[-1]
    for v in res.values():
        v["vs_persistence"] = round(v["mse"] / res["persistence"]["mse"], 3)
    line, ok = versus(stats, rnn, ar, "MSE", higher_is_better=False)
    res["versus"] = {"line": line, "deep_within_1se": ok, "se": f"bootstrap over {len(truth)} held-out sequences"}
    return res


# -- tasks ---------------------------------------------------------------------------------------------
def synth_classify(noise=0.3):
    train = sn.ts.simulate_oscillations(600, noise=noise, seed=0)
    test = sn.ts.simulate_oscillations(400, noise=noise, seed=1)
    ytr, yte = train.obs["label"].astype(str).to_numpy(), test.obs["label"].astype(str).to_numpy()
    s_tr, s_te = sn.ts.get_sequences(train), sn.ts.get_sequences(test)
    res, preds = {}, {}
    for name, feats in (("RF (flattened)", flattened), ("RF (summary)", summary)):
        pred, _ = random_forest(feats(s_tr), ytr, feats(s_te))
        res[name] = classify_scores(yte, pred)
        preds[name] = pred
    t0 = time.perf_counter()
    model = sn.tl.train_sequence_classifier(train, labels_key="label", **RNN_CLF)
    preds["RNN (BiLSTM)"] = np.asarray(model.predict(test)).astype(str)
    res["RNN (BiLSTM)"] = {**classify_scores(yte, preds["RNN (BiLSTM)"]),
                           "train_seconds": round(time.perf_counter() - t0, 1), "epochs": model.history.epoch[-1]}
    stats = bootstrap_se(lambda idx: {k: accuracy_score(yte[idx[0]], p[idx[0]]) for k, p in preds.items()},
                         [len(yte)], n_boot=N_BOOT)
    for k in preds:
        res[k]["accuracy_se"] = round(stats[k][1], 4)
    line, ok = versus(stats, "RNN (BiLSTM)", "RF (summary)", "accuracy")
    res["versus"] = {"line": line, "deep_within_1se": ok, "se": f"bootstrap over {len(yte)} test sequences"}
    return res


def synth_embed():
    """kNN (5-NN, 5-fold) accuracy of the frequency class in each representation; no labels in training."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    seqs = sn.ts.simulate_oscillations(400, seed=3)
    y = seqs.obs["label"].astype(str).to_numpy()
    s = sn.ts.get_sequences(seqs)
    t0 = time.perf_counter()
    sn.tl.sequence_embedding(seqs, n_latent=8, hidden=(32,), lr=3e-3, batch_size=32, early_stopping=10,
                             validation_fraction=0.15, progress=False, seed=0)
    seconds = time.perf_counter() - t0
    reps = {"PCA of flattened (8 PCs)": PCA(8, random_state=0).fit_transform(flattened(s)),
            "summary features (scaled)": (lambda F: (F - F.mean(0)) / (F.std(0) + 1e-9))(summary(s)),
            "RNN autoencoder (X_rnn, 8)": seqs.obsm["X_rnn"]}
    res = {k: {"knn_accuracy": round(float(cross_val_score(KNeighborsClassifier(5), v, y, cv=5).mean()), 4)}
           for k, v in reps.items()}
    res["RNN autoencoder (X_rnn, 8)"]["train_seconds"] = round(seconds, 1)
    return res


def synth_forecast():
    return forecast_task(sn.ts.simulate_damped(400, seed=0), sn.ts.simulate_damped(200, seed=1), horizon=5)


def tgmm_branches(min_length=1):
    spots = sn.ts.read_mastodon_csv(SAMPLE / "tgmm-mini-spot.csv.gz")
    feats = ["Spot intensity mean", "Spot ellipsoid volume", "Spot ellipsoid aspect ratios short/long",
             "Spot intensity std"]
    seqs = sn.ts.from_tracks(spots, features=feats, track_key="Branch spot ID", time_key="frame")
    return seqs[seqs.obs["length"] >= min_length].copy()


def tgmm_divides():
    seqs = tgmm_branches()
    y = np.where(seqs.obs["divides"].to_numpy(dtype=bool), "divides", "no")
    seqs.obs["label"] = y
    s = sn.ts.get_sequences(seqs)
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    preds = {k: (np.empty(len(y), dtype=object), np.zeros(len(y))) for k in
             ("RF (flattened)", "RF (summary)", "RNN (BiLSTM)")}
    seconds = 0.0
    for tr, te in folds:
        for name, feats in (("RF (flattened)", flattened), ("RF (summary)", summary)):
            F = feats(s)
            pred, proba = random_forest(F[tr], y[tr], F[te])
            preds[name][0][te], preds[name][1][te] = pred, proba[:, 0]  # classes sorted: "divides" first
        t0 = time.perf_counter()
        model = sn.tl.train_sequence_classifier(seqs[tr].copy(), labels_key="label", **REAL_CLF)
        seconds += time.perf_counter() - t0
        proba = model.predict_proba(seqs[te].copy())
        preds["RNN (BiLSTM)"][0][te] = np.asarray(model.classes, dtype=object)[proba.argmax(1)]
        preds["RNN (BiLSTM)"][1][te] = proba[:, model.classes.index("divides")]
    res = {k: classify_scores(y, p.astype(str), pr, positive="divides") for k, (p, pr) in preds.items()}
    res["RNN (BiLSTM)"]["train_seconds"] = round(seconds, 1)
    res["majority class"] = classify_scores(y, np.full(len(y), "no"))
    # standard errors: bootstrap over the 212 branches of the pooled out-of-fold predictions
    pos = y == "divides"
    auc = bootstrap_se(lambda idx: {k: roc_auc_score(pos[idx[0]], pr[idx[0]]) for k, (_, pr) in preds.items()},
                       [len(y)], n_boot=N_BOOT)
    bal = bootstrap_se(lambda idx: {k: balanced_accuracy_score(y[idx[0]], p[idx[0]].astype(str))
                                    for k, (p, _) in preds.items()}, [len(y)], n_boot=N_BOOT)
    for k in preds:
        res[k]["roc_auc_se"], res[k]["balanced_accuracy_se"] = round(auc[k][1], 4), round(bal[k][1], 4)
    lines = [versus(st, "RNN (BiLSTM)", "RF (summary)", m) for st, m in ((auc, "ROC AUC"), (bal, "balanced accuracy"))]
    res["versus"] = {"line": " · ".join(l for l, _ in lines), "deep_within_1se": lines[0][1],
                     "se": f"bootstrap over the {len(y)} branches (pooled out-of-fold predictions)"}
    return res


def tgmm_forecast():
    seqs = tgmm_branches(min_length=8)
    s = sn.ts.get_sequences(seqs)  # keep intensity mean and volume
    seqs = sn.ts.from_array(s.x[:, :, :2], lengths=s.lengths, features=s.features[:2], obs=seqs.obs.drop(columns="length"))
    rng = np.random.default_rng(0)
    perm = rng.permutation(seqs.n_obs)
    n_tr = int(0.7 * len(perm))
    train, test = seqs[np.sort(perm[:n_tr])].copy(), seqs[np.sort(perm[n_tr:])].copy()
    st = sn.ts.get_sequences(train)
    real = np.arange(st.x.shape[1])[None, :] < st.lengths[:, None]
    scale = st.x[real].std(0)
    res = forecast_task(train, test, horizon=3, scale=scale, rnn_options=REAL_FC)
    return {"n_train": int(train.n_obs), "n_test": int(test.n_obs), **res}


def hsmm_forecast():
    hsmm = ad.read_h5ad(SAMPLE / "hsmm_timecourse_2k.h5ad")
    hours = np.asarray(hsmm.obs["Hours"].astype(str).astype(float))
    rng = np.random.default_rng(0)
    is_train = np.zeros(hsmm.n_obs, dtype=bool)
    for h in np.unique(hours):
        idx = np.flatnonzero(hours == h)
        is_train[rng.choice(idx, len(idx) // 2, replace=False)] = True
    X = np.log1p(hsmm.X.toarray())
    pca = PCA(10, random_state=0).fit(X[is_train])
    hsmm.obsm["X_pca"] = pca.transform(X)
    make = dict(time_key="Hours", use_rep="X_pca", cells_per_step=10)
    train = sn.ts.from_timecourse(hsmm[is_train].copy(), n_pseudo=200, seed=1, **make)
    test = sn.ts.from_timecourse(hsmm[~is_train].copy(), n_pseudo=100, seed=2, **make)
    return forecast_task(train, test, horizon=1, p=3, rnn_options=REAL_FC)


def synth_classify_noisy():
    return synth_classify(noise=0.8)


TASKS = {"synth_classify": synth_classify, "synth_classify_noisy": synth_classify_noisy, "synth_embed": synth_embed,
         "synth_forecast": synth_forecast, "tgmm_divides": tgmm_divides,
         "tgmm_forecast": tgmm_forecast, "hsmm_forecast": hsmm_forecast}


def se(r, key):
    return f" ± {r[key + '_se']:.3f}" if key + "_se" in r else ""


def main(argv):
    names = [a for a in argv if a in TASKS] or list(TASKS)
    unknown = [a for a in argv if a not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    out_file = ROOT / "benchmarks" / "results" / "timecourse.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = TASKS[name]()
        results[name]["task_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    results["_machine"] = {"cpu_threads": 1, "device": "cpu", "versions": sn.train.repro.package_versions()}
    out_file.write_text(json.dumps(results, indent=1))
    print()
    print("| task | method | metric | value | vs persistence / notes |")
    print("| --- | --- | --- | --- | --- |")
    for name in [n for n in TASKS if n in results]:
        for method, r in results[name].items():
            if not isinstance(r, dict):
                continue
            if method == "versus":
                continue
            if "knn_accuracy" in r:
                print(f"| {name} | {method} | 5-NN accuracy | {r['knn_accuracy']:.3f} | |")
            elif "mse" in r:
                print(f"| {name} | {method} | MSE | {r['mse']:.4g}{se(r, 'mse')} | {r['vs_persistence']:.3f} |")
            else:
                extra = (f"balanced acc {r['balanced_accuracy']:.3f}{se(r, 'balanced_accuracy')}"
                         + (f", AUC {r['roc_auc']:.3f}{se(r, 'roc_auc')}" if "roc_auc" in r else ""))
                print(f"| {name} | {method} | accuracy | {r['accuracy']:.3f}{se(r, 'accuracy')} | {extra} |")
    print()
    for name in [n for n in TASKS if n in results and "versus" in results[n]]:
        v = results[name]["versus"]
        print(f"{name} ({v['se']}): {v['line']}")


if __name__ == "__main__":
    main(sys.argv[1:])
