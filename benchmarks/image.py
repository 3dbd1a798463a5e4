"""CNN on cell crops vs a random forest on scikit-image regionprops features; embedding speed.

    python benchmarks/image.py                      # all parts (about 15 minutes on one core)
    python benchmarks/image.py classify             # accuracy / macro-F1 table only
    python benchmarks/image.py speed --threads 2    # crops/s only

classify: two synthetic images (``sn.im.synthetic_image``, 100 objects per class):
  * ``texture`` — striped vs speckled discs, same size distribution and the same distribution of
    pixel intensities; only the spatial pattern differs;
  * ``size`` — small vs large discs, same (speckled) texture.
For 5, 10 and 20 annotated objects per class and three random draws of them, the SAME annotated
objects train both models and all other objects are the test set:
  * random forest (scikit-learn, 300 trees) on the regionprops features napari's object
    classifiers use: area, perimeter, eccentricity, solidity, extent, major / minor axis length,
    mean / min / max / standard deviation of intensity;
  * ``sn.tl.train_image_classifier`` with its DEFAULT settings on 32 px crops
    (``normalize="image"``).
A third, real set: ``bbbc007`` — which of two BBBC007 plates (A9: 111 cells, 20P1: 85 cells;
Drosophila Kc167, DNA stain) a cell comes from; each image is normalised on its own for the CNN,
the random forest sees the raw intensities (plates differ in imaging as well as in biology).
Reported: mean ± sd over the draws of held-out accuracy and macro-F1, and the CNN's training
seconds (wall clock); then the same means ± their standard error over the held-out cells
(bootstrap: 1,000 replicates, each resampling every draw's test cells) and, per set, the line
"deep ≥ classical − 1 SE: yes/no" (deep = the CNN, classical = the random forest).

embed: 15-NN accuracy (stratified 5-fold) of ``image_embedding``'s ``X_cnn`` (defaults; the
autoencoder and ``method="contrastive"``), of PCA
on the crop pixels and of the standardised regionprops features, on the same three sets.

scale (not in the default run): 100,000 objects — the dsb2018 frame as an 800-frame lazy dask
time-lapse — cropped to a .npy memory map and embedded chunk by chunk; seconds and peak memory.

speed: crops of the real dsb2018 nuclei (48 px), replicated to 20,000: crop extraction objects/s
(``cells_from_labels`` on the 512×512 image), and ``image_embedding``'s conv autoencoder
(default 16/32/64 channels, 16 dimensions): training seconds per 1,000 crops (one epoch over
4,096) and inference crops/s, on the CPU with the given number of torch threads; per wall-clock second and per CPU
second of this process (the two agree on an idle machine with one thread; on a busy shared
machine the CPU-second rate is the fair one).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score

import scnapse as sn
from scnapse.models.image import ImageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bootstrap_se, versus  # noqa: E402

warnings.filterwarnings("ignore")
sn.settings.verbosity = logging.WARNING

PROPS = ("area", "perimeter", "eccentricity", "solidity", "extent", "major_axis_length", "minor_axis_length",
         "intensity_mean", "intensity_min", "intensity_max", "intensity_std")


def regionprops_features(image, labels, label_ids) -> np.ndarray:
    from skimage.measure import regionprops_table

    table = pd.DataFrame(regionprops_table(labels, image, properties=("label", *PROPS))).set_index("label")
    return table.loc[label_ids, list(PROPS)].to_numpy(dtype=np.float64)


def dataset(kind: str, n_per_class: int = 100):
    """Cells (32 px crops), the true class of each, and the regionprops features of each."""
    if kind in ("texture", "size"):
        image, labels, classes = sn.im.synthetic_image(n_per_class, kind=kind, seed=11)
        cells = sn.im.cells_from_labels(image, labels, size=32)
        truth = classes[cells.obs["label"].to_numpy() - 1].astype(str)
        return cells, truth, regionprops_features(image, labels, cells.obs["label"].to_numpy())
    parts, feats = [], []  # bbbc007: which plate a cell comes from (each image normalised on its own)
    for name in ("bbbc007_a9", "bbbc007_20p1"):
        image, labels = sn.im.sample_image(name)
        part = sn.im.cells_from_labels(image, labels, size=32)
        part.obs["plate"] = name
        part.obs_names = [f"{name}_{i}" for i in part.obs_names]
        parts.append(part)
        feats.append(regionprops_features(image, labels, part.obs["label"].to_numpy()))
    cells = ad.concat(parts, uns_merge="first")
    return cells, cells.obs["plate"].to_numpy().astype(str), np.vstack(feats)


def classify(datasets=("texture", "size", "bbbc007"), shots=(5, 10, 20), draws: int = 3):
    """Rows of scores per draw, and the held-out truth and predictions of every draw (for the
    standard errors): ``{(kind, n): [(truth, {model: predictions}), ...]}``."""
    rows, held_out = [], {}
    for kind in datasets:
        cells, truth, feats = dataset(kind)
        for n in shots:
            for draw in range(draws):
                rng = np.random.default_rng(100 + draw)
                train = np.concatenate([rng.choice(np.flatnonzero(truth == c), n, replace=False)
                                        for c in np.unique(truth)])
                test = np.setdiff1d(np.arange(cells.n_obs), train)
                rf = RandomForestClassifier(n_estimators=300, random_state=draw).fit(feats[train], truth[train])
                pred_rf = rf.predict(feats[test])
                annotation = np.full(cells.n_obs, np.nan, dtype=object)
                annotation[train] = truth[train]
                cells.obs["annotation"] = pd.Categorical(annotation)
                t0 = time.perf_counter()
                model = sn.tl.train_image_classifier(cells, labels_key="annotation", seed=draw, progress=False)
                seconds = time.perf_counter() - t0
                pred_cnn = np.asarray(model.predict(cells)).astype(str)[test]
                held_out.setdefault((kind, n), []).append(
                    (truth[test], {"random forest (regionprops)": pred_rf, "CNN (scnapse)": pred_cnn}))
                for name, pred in (("random forest (regionprops)", pred_rf), ("CNN (scnapse)", pred_cnn)):
                    rows.append({"classes differ in": kind, "annotated per class": n, "model": name, "draw": draw,
                                 "accuracy": accuracy_score(truth[test], pred),
                                 "macro_f1": f1_score(truth[test], pred, average="macro"),
                                 "train_s": seconds if name.startswith("CNN") else np.nan,
                                 "epochs": len(model.history.epoch) if name.startswith("CNN") else np.nan})
                print(f"  {kind:7s} n={n:2d} draw={draw}: RF {rows[-2]['accuracy']:.3f}  CNN {rows[-1]['accuracy']:.3f} "
                      f"({seconds:.1f} s, {rows[-1]['epochs']} epochs)", flush=True)
    return pd.DataFrame(rows), held_out


def standard_errors(held_out: dict, n_boot: int = 1000) -> tuple[pd.DataFrame, list[str]]:
    """Accuracy and macro-F1 (mean over draws) with their bootstrap standard error over the
    held-out cells (each replicate resamples every draw's test cells), and per set the line
    "deep ≥ classical − 1 SE: yes/no" on accuracy and on macro-F1."""
    rows, lines = [], []
    for (kind, n), draws in held_out.items():
        stats = {}
        for metric, fn in (("accuracy", accuracy_score),
                           ("macro-F1", lambda t, p: f1_score(t, p, average="macro"))):
            def score(idx, fn=fn):
                return {m: float(np.mean([fn(t[i], preds[m][i]) for (t, preds), i in zip(draws, idx)]))
                        for m in draws[0][1]}
            stats[metric] = bootstrap_se(score, [len(t) for t, _ in draws], n_boot=n_boot)
        for m in draws[0][1]:
            rows.append({"classes differ in": kind, "annotated per class": n, "model": m,
                         **{f"{metric} ± SE": f"{st[m][0]:.3f} ± {st[m][1]:.3f}" for metric, st in stats.items()}})
        verdicts = [versus(st, "CNN (scnapse)", "random forest (regionprops)", metric)
                    for metric, st in stats.items()]
        lines.append(f"{kind}, {n} per class ({len(draws)} draws, {sum(len(t) for t, _ in draws)} held-out "
                     f"cells in all): " + " · ".join(line for line, _ in verdicts))
    return pd.DataFrame(rows), lines


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["classes differ in", "annotated per class", "model"], sort=False)
    out = g.agg(acc_mean=("accuracy", "mean"), acc_sd=("accuracy", "std"), f1_mean=("macro_f1", "mean"),
                f1_sd=("macro_f1", "std"), train_s=("train_s", "mean")).reset_index()
    out["accuracy"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out.acc_mean, out.acc_sd)]
    out["macro-F1"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out.f1_mean, out.f1_sd)]
    out["train s"] = ["" if np.isnan(v) else f"{v:.1f}" for v in out.train_s]
    return out[["classes differ in", "annotated per class", "model", "accuracy", "macro-F1", "train s"]]


def embed(datasets=("texture", "size", "bbbc007")) -> pd.DataFrame:
    """15-NN accuracy (stratified 5-fold) of image_embedding's X_cnn (both methods, defaults),
    PCA(16) of the crop pixels, and standardised regionprops features, against the true classes."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    rows = []
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    for kind in datasets:
        cells, truth, feats = dataset(kind)
        sn.tl.image_embedding(cells, seed=0, progress=False)
        sn.tl.image_embedding(cells, method="contrastive", key_added="X_contrastive", seed=0, progress=False)
        reps = {"X_cnn, method='autoencoder' (default)": cells.obsm["X_cnn"],
                "X_cnn, method='contrastive'": cells.obsm["X_contrastive"],
                "PCA(16) of crop pixels": PCA(16, random_state=0).fit_transform(
                    np.asarray(cells.obsm["crops"]).reshape(cells.n_obs, -1)),
                "regionprops (standardised)": StandardScaler().fit_transform(feats)}
        for name, X in reps.items():
            acc = cross_val_score(KNeighborsClassifier(15), X, truth, cv=cv).mean()
            rows.append({"classes differ in": kind, "representation": name, "15-NN accuracy": f"{acc:.3f}"})
            print(f"  {kind:7s} {name}: {acc:.3f}", flush=True)
    return pd.DataFrame(rows)


def speed(n_crops: int = 20_000, size: int = 48) -> pd.DataFrame:
    image, labels = sn.im.sample_image("dsb2018")
    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    reps = 20
    out = {}
    wall, cpu = timed(lambda: [out.setdefault("cells", sn.im.cells_from_labels(image, labels, size=size))
                               for _ in range(reps)] and None)
    cells = sn.im.cells_from_labels(image, labels, size=size)
    n_obj = reps * cells.n_obs
    big = cells[np.resize(np.arange(cells.n_obs), n_crops)].copy()
    big.obs_names_make_unique()
    model = ImageModel("embed", n_latent=16, max_epochs=1, validation_fraction=0, early_stopping=0, seed=0)
    n_train = min(n_crops, 4096)
    small = big[:n_train].copy()
    t_wall, t_cpu = timed(lambda: model.fit(small, progress=False))
    model.transform(big[:512])  # warm-up
    i_wall, i_cpu = timed(lambda: model.transform(big))
    return pd.DataFrame([
        {"what": f"crops from labels ({size} px, dsb2018 512×512)", "per wall-clock second": f"{n_obj / wall:,.0f} objects",
         "per CPU second": f"{n_obj / cpu:,.0f} objects"},
        {"what": f"conv autoencoder training ({size} px, 1 channel, batch 64)",
         "per wall-clock second": f"{n_train / t_wall:,.0f} crops", "per CPU second": f"{n_train / t_cpu:,.0f} crops"},
        {"what": f"embedding inference ({size} px, 1 channel)", "per wall-clock second": f"{n_crops / i_wall:,.0f} crops",
         "per CPU second": f"{n_crops / i_cpu:,.0f} crops"},
    ])


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _rss_anon_mb() -> float:
    """Anonymous resident memory of this process (heap, arrays; not file pages of memory maps)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scale(n_frames: int = 800, size: int = 32, workdir: str | None = None) -> pd.DataFrame:
    """100,000 objects: the dsb2018 frame repeated as a lazy (dask) time-lapse of ``n_frames``
    frames; crops written to a .npy memory map; then embedded in chunks. Reports the time and
    the peak anonymous memory (sampled every 0.1 s)."""
    import tempfile
    import threading

    import dask.array as da

    image, labels = sn.im.sample_image("dsb2018")
    lazy_img = da.broadcast_to(da.from_array(image, chunks=image.shape), (n_frames, *image.shape),
                               chunks=(1, *image.shape))
    lazy_lab = da.broadcast_to(da.from_array(labels, chunks=labels.shape), (n_frames, *labels.shape),
                               chunks=(1, *labels.shape))
    peak, stop = [_rss_anon_mb()], threading.Event()

    def watch():
        while not stop.wait(0.1):
            peak.append(_rss_anon_mb())

    base = _rss_anon_mb()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        cells = sn.im.cells_from_labels(lazy_img, lazy_lab, size=size, time_axis=0, crops_file=f"{tmp}/crops.npy")
        t_crops = time.perf_counter() - t0
        crops_peak = max(peak) - base
        model = ImageModel("embed", max_epochs=1, validation_fraction=0, early_stopping=0, seed=0)
        model.fit(cells[:2048].copy(), progress=False)
        peak.append(_rss_anon_mb())
        t0 = time.perf_counter()
        emb = model.transform(cells)
        t_emb = time.perf_counter() - t0
        stop.set()
        watcher.join()
        n = cells.n_obs
        gb = n * size * size * 4 / 1e9
        del cells
    return pd.DataFrame([
        {"what": f"cells_from_labels, {n_frames} frames × 512×512 (dask, lazy) → {n:,} crops of {size} px "
                 f"({gb:.2f} GB on disk)", "seconds": f"{t_crops:.0f}",
         "peak extra memory": f"{crops_peak:,.0f} MB"},
        {"what": f"image_embedding transform of all {n:,} crops (read from the memory map)",
         "seconds": f"{t_emb:.0f}", "peak extra memory": f"{max(peak) - base:,.0f} MB (incl. model)"},
        {"what": "embedding shape", "seconds": "", "peak extra memory": str(emb.shape)},
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["classify", "embed", "speed"],
                    choices=["classify", "embed", "speed", "scale"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--datasets", nargs="+", default=["texture", "size", "bbbc007"],
                    choices=["texture", "size", "bbbc007"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sn.settings.n_threads = args.threads  # the steps set their own thread count from this
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s)")
    if "classify" in args.parts:
        df, held_out = classify(args.datasets, draws=args.draws)
        print(markdown(summarise(df)))
        table, lines = standard_errors(held_out)
        print("\nStandard errors: bootstrap over the held-out cells (1,000 resamples of every draw's test cells)")
        print(markdown(table))
        print("\n".join(lines))
    if "embed" in args.parts:
        print(markdown(embed(args.datasets)))
    if "speed" in args.parts:
        print(markdown(speed()))
    if "scale" in args.parts:
        print(markdown(scale()))


if __name__ == "__main__":
    main()
