"""Training time by thread count, on an idle machine and beside a competing CPU-bound process.

    python benchmarks/threads.py                  # families × conditions × threads, then the GRU check
    python benchmarks/threads.py --repeats 5      # best of 5 instead of 3
    python benchmarks/threads.py families         # one part only ("families", "sizes" or "gru")

families: each family's training on tiny data, a few epochs (early stopping off), through the public
step with ``threads=1``, ``threads=2`` and the default (``threads`` not given:
``scnapse.settings.n_threads``, "auto"), in two conditions: "idle" (nothing else started by this
script) and "busy" (one busy-loop subprocess, ``while True: pass``, running the whole time). Runs
are interleaved (1, 2, default, 1, 2, default, …) and the best of ``--repeats`` is kept, because
single timings on a shared machine swing widely. Reported: seconds per run, the thread counts the
default chose (it measures the load when a step starts), the default's time relative to the best of
the three, and the 1-minute load average at the end of the row.

* autoencoder: ``sn.tl.autoencoder`` on pbmc68k (700 cells × 765 genes, log data), 10 epochs;
* classifier: ``sn.tl.train_classifier`` on pbmc68k (``bulk_labels``), 10 epochs;
* image CNN: ``sn.tl.train_image_classifier`` on ``sn.im.synthetic_image(40)`` (80 crops of 32 px), 5 epochs;
* sequence RNN: ``sn.tl.train_sequence_classifier`` on 200 simulated oscillations (20–50 steps), 5 epochs.

sizes: one training step (forward, backward, Adam) of an autoencoder-shaped network (genes → hidden →
10 → hidden → genes, ReLU, MSE) at eight sizes from 200 genes × 128 hidden × 128 cells to 5,000 ×
256 × 256 (two with the classifier's mini-batch of 32 cells), with 1 and 2 threads
(``scnapse.train.thread_limits``), idle and beside the busy loop; median of 15 steps after 3
warm-up steps, best of ``--repeats`` interleaved. It shows whether any
fixed count is right at every size and load (it is not: the load decides).

gru: one epoch of ``sn.tl.sequence_embedding`` (defaults; the 212 tgmm-mini track branches, ≤ 31
steps, 4 features) against a bare PyTorch loop training the same network shape on the same data
(bidirectional GRU encoder of width 64 → 8-dimensional code → GRU decoder, Adam, masked MSE,
batch 128, the same 90/10 split), after one warm-up epoch each; best of ``--repeats`` epochs, one
thread. The bare loop runs on padded batches (no packing) and once with packed sequences as
scnapse does. The ratio is bare seconds / scnapse seconds (1.0 = as fast as the bare loop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import scnapse as sn  # before torch, as in a user's script: scnapse sets OMP_WAIT_POLICY before torch loads

import torch  # noqa: E402

warnings.filterwarnings("ignore")
sn.settings.verbosity = 30
ROOT = Path(__file__).resolve().parents[1]


# -- the workloads -----------------------------------------------------------------------------------
def workloads() -> dict:
    """name -> function(threads) running one training; data prepared once, outside the timing."""
    pbmc = sn.datasets.pbmc68k()
    image, labels, classes = sn.im.synthetic_image(40, kind="texture", seed=0)
    cells = sn.im.cells_from_labels(image, labels, size=32)
    cells.obs["kind"] = classes[cells.obs["label"].to_numpy() - 1].astype(str)
    seqs = sn.ts.simulate_oscillations(200, seed=0)
    common = {"progress": False, "seed": 0, "early_stopping": 0}

    def opts(threads):
        return common if threads is None else {**common, "threads": threads}

    return {
        "autoencoder (700 × 765, 10 epochs)":
            lambda t: sn.tl.autoencoder(pbmc, max_epochs=10, copy=True, **opts(t)),
        "classifier (700 × 765, 10 epochs)":
            lambda t: sn.tl.train_classifier(pbmc, labels_key="bulk_labels", max_epochs=10, **opts(t)),
        "image CNN (80 crops, 5 epochs)":
            lambda t: sn.tl.train_image_classifier(cells, labels_key="kind", max_epochs=5, **opts(t)),
        "sequence RNN (200 × ≤50 steps, 5 epochs)":
            lambda t: sn.tl.train_sequence_classifier(seqs, labels_key="label", max_epochs=5, **opts(t)),
    }


def threads_used(out) -> int:
    """The thread count a training recorded (a model's params, or a copy's ``uns``)."""
    params = out.params if hasattr(out, "params") else out.uns["autoencoder"]["params"]
    return int(params["threads"])


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def families(repeats: int) -> list[dict]:
    runs = workloads()
    settings = [("1", 1), ("2", 2), ("default", None)]
    rows = []
    for condition in ("idle", "busy"):
        competitor = busy_loop() if condition == "busy" else None
        try:
            for name, run in runs.items():
                run(1)  # warm-up
                best = {label: np.inf for label, _ in settings}
                used = set()  # the counts the default chose (it measures the load when a step starts)
                for _ in range(repeats):
                    for label, threads in settings:
                        t0 = time.perf_counter()
                        out = run(threads)
                        best[label] = min(best[label], time.perf_counter() - t0)
                        if threads is None:
                            used.add(threads_used(out))
                fastest = min(best.values())
                row = {"workload": name, "condition": condition, **{k: round(v, 3) for k, v in best.items()},
                       "default threads": "/".join(str(n) for n in sorted(used)),
                       "default / best": round(best["default"] / fastest, 2),
                       "load average": round(os.getloadavg()[0], 1)}
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    return rows


# -- one training step by size, 1 and 2 threads ---------------------------------------------------------
SIZES = [(765, 256, 32), (2000, 256, 32), (200, 128, 128), (765, 128, 128), (765, 256, 256), (2000, 128, 128), (2000, 256, 256), (5000, 256, 256)]


def step_seconds(genes: int, hidden: int, batch: int, threads: int, steps: int = 15) -> float:
    with sn.train.thread_limits(threads):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(genes, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10),
                                  torch.nn.Linear(10, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, genes))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        x = torch.randn(batch, genes)
        times = []
        for i in range(3 + steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            ((net(x) - x) ** 2).mean().backward()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return float(np.median(times))


def sizes(repeats: int) -> list[dict]:
    rows = []
    for condition in ("idle", "busy"):
        competitor = busy_loop() if condition == "busy" else None
        try:
            for genes, hidden, batch in SIZES:
                best = {1: np.inf, 2: np.inf}
                for _ in range(repeats):
                    for n in (1, 2):
                        best[n] = min(best[n], step_seconds(genes, hidden, batch, n))
                row = {"genes × hidden × cells": f"{genes} × {hidden} × {batch}", "condition": condition,
                       "1 thread, ms": round(best[1] * 1e3, 2), "2 threads, ms": round(best[2] * 1e3, 2),
                       "2 / 1": round(best[2] / best[1], 2), "load average": round(os.getloadavg()[0], 1)}
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    return rows


# -- the sequence embedding against a bare GRU loop ----------------------------------------------------
def tgmm_sequences():
    spots = sn.ts.read_mastodon_csv(sn.datasets.sample_path("tgmm-mini-spot.csv.gz"))
    feats = ["Spot intensity mean", "Spot ellipsoid volume", "Spot ellipsoid aspect ratios short/long",
             "Spot intensity std"]
    return sn.ts.from_tracks(spots, features=feats, track_key="Branch spot ID", time_key="frame")


class BareAutoencoder(torch.nn.Module):
    def __init__(self, n_in, hidden=64, n_latent=8, packed=False):
        super().__init__()
        self.enc = torch.nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)
        self.lat = torch.nn.Linear(2 * hidden, n_latent)
        self.h0 = torch.nn.Linear(n_latent, hidden)
        self.dec = torch.nn.GRU(n_latent + 1, hidden, batch_first=True)
        self.out = torch.nn.Linear(hidden, n_in)
        self.packed = packed

    def _run(self, rnn, x, L, h0=None):
        if not self.packed:
            return rnn(x, h0)
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        out, h = rnn(pack_padded_sequence(x, L, batch_first=True, enforce_sorted=False), h0)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], h

    def forward(self, x, L):
        b, T, _ = x.shape
        _, h = self._run(self.enc, x, L)
        z = self.lat(torch.cat([h[0], h[1]], dim=1))
        pos = (torch.arange(T, dtype=x.dtype) / T)[None, :, None].expand(b, T, 1)
        out, _ = self._run(self.dec, torch.cat([z[:, None].expand(b, T, z.shape[1]), pos], 2), L,
                           torch.tanh(self.h0(z))[None])
        return self.out(out)


def bare_epoch(model, opt, x, L, mask, order, batch_size=128):
    model.train()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        T = int(L[idx].max())
        xb, mb = x[idx, :T], mask[idx, :T]
        loss = (((model(xb, L[idx]) - xb) ** 2) * mb).sum() / (mb.sum() * x.shape[2])
        opt.zero_grad()
        loss.backward()
        opt.step()


def gru_vs_bare(repeats: int) -> dict:
    seqs = tgmm_sequences()
    s = sn.ts.get_sequences(seqs)
    x = np.nan_to_num(s.x.astype(np.float32))
    L = torch.as_tensor(s.lengths, dtype=torch.int64)
    real = np.arange(x.shape[1])[None, :] < s.lengths[:, None]
    mean, std = x[real].mean(0), x[real].std(0) + 1e-8
    xt = torch.as_tensor((x - mean) / std * real[:, :, None], dtype=torch.float32)
    mask = torch.as_tensor(real[:, :, None], dtype=torch.float32)
    rng = np.random.default_rng(0)
    n_train = int(0.9 * s.n)
    out = {"sequences": int(s.n), "max_steps": int(s.lengths.max()), "features": int(x.shape[2])}
    with sn.train.thread_limits(1):
        for packed in (False, True):
            torch.manual_seed(0)
            model = BareAutoencoder(x.shape[2], packed=packed)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            times = []
            for _ in range(repeats + 1):
                order = torch.as_tensor(rng.permutation(s.n)[:n_train])
                t0 = time.perf_counter()
                bare_epoch(model, opt, xt, L, mask, order)
                with torch.no_grad():  # validation, as scnapse does every epoch
                    model.eval()
                    model(xt[-(s.n - n_train):], L[-(s.n - n_train):])
                times.append(time.perf_counter() - t0)
            out["bare (packed)" if packed else "bare (padded)"] = {"first_epoch_s": round(times[0], 4),
                                                                   "epoch_s": round(min(times[1:]), 4)}
    stamps = []
    t0 = time.perf_counter()
    sn.tl.sequence_embedding(seqs, max_epochs=repeats + 1, early_stopping=0, progress=False, seed=0, threads=1,
                             callback=lambda r: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    epochs = np.diff(stamps)
    first = stamps[0] - t0  # setup (input checks, standardising, split) + the first epoch
    out["scnapse"] = {"first_epoch_s": round(first, 4), "epoch_s": round(float(epochs.min()), 4),
                      "whole_call_s": round(total, 3)}
    for k in ("bare (padded)", "bare (packed)"):
        out[f"speed vs {k}"] = round(out[k]["epoch_s"] / out["scnapse"]["epoch_s"], 2)
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help="'families', 'sizes' and/or 'gru' (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N (interleaved)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "threads.json"))
    args = ap.parse_args()
    parts = ["families", "sizes", "gru"]
    args.parts = args.parts or parts
    if set(args.parts) - set(parts):
        ap.error(f"unknown part(s) {sorted(set(args.parts) - set(parts))}; choose from {parts}")
    print(f"torch {torch.__version__}; CPUs available to this process: {sn._settings.available_cpus()}, "
          f"taken by other programs now: {sn._settings.busy_cpus()}")
    results = {}
    if "families" in args.parts:
        results["families"] = families(args.repeats)
        print(markdown(results["families"]))
    if "sizes" in args.parts:
        results["sizes"] = sizes(args.repeats)
        print(markdown(results["sizes"]))
    if "gru" in args.parts:
        results["gru"] = gru_vs_bare(args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
