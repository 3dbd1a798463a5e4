"""Training time by thread count, on an idle machine and beside a competing CPU-bound process.

    python benchmarks/threads.py                  # families × conditions × threads, then the GRU check
    python benchmarks/threads.py --repeats 5      # best of 5 instead of 3
    python benchmarks/threads.py families         # one part only ("families" or "gru")

families: each family's training on tiny data, a few epochs (early stopping off), through the public
step with ``threads=1``, ``threads=2`` and the default (``threads`` not given:
``scnapse.settings.n_threads``, "auto"), in two conditions: "idle" (nothing else started by this
script) and "busy" (one busy-loop subprocess, ``while True: pass``, running the whole time). Runs
are interleaved (1, 2, default, 1, 2, default, …) and the best of ``--repeats`` is kept, because
single timings on a shared machine swing widely. Reported: seconds per run and the default's time
relative to the best of the three.

* autoencoder: ``sn.tl.autoencoder`` on pbmc68k (700 cells × 765 genes, log data), 10 epochs;
* classifier: ``sn.tl.train_classifier`` on pbmc68k (``bulk_labels``), 10 epochs;
* image CNN: ``sn.tl.train_image_classifier`` on ``sn.im.synthetic_image(40)`` (80 crops of 32 px), 5 epochs;
* sequence RNN: ``sn.tl.train_sequence_classifier`` on 200 simulated oscillations (20–50 steps), 5 epochs.

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
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import scnapse as sn

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


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


#: the kind of training of each workload (as the models declare it), for the default's thread count
WORKLOAD_KIND = {"sequence RNN (200 × ≤50 steps, 5 epochs)": sn.models.SequenceModel.workload}


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
                for _ in range(repeats):
                    for label, threads in settings:
                        t0 = time.perf_counter()
                        run(threads)
                        best[label] = min(best[label], time.perf_counter() - t0)
                fastest = min(best.values())
                row = {"workload": name, "condition": condition, **{k: round(v, 3) for k, v in best.items()},
                       "default threads": sn.train.RunOptions().n_threads(WORKLOAD_KIND.get(name)),
                       "default / best": round(best["default"] / fastest, 2)}
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
    ap.add_argument("parts", nargs="*", help="'families' and/or 'gru' (default: both)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N (interleaved)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "threads.json"))
    args = ap.parse_args()
    args.parts = args.parts or ["families", "gru"]
    if set(args.parts) - {"families", "gru"}:
        ap.error(f"unknown part(s) {sorted(set(args.parts) - {'families', 'gru'})}; choose 'families' and/or 'gru'")
    print(f"torch {torch.__version__}; CPUs available to this process: {sn.train.RunOptions().n_threads()}")
    results = {}
    if "families" in args.parts:
        results["families"] = families(args.repeats)
        print(markdown(results["families"]))
    if "gru" in args.parts:
        results["gru"] = gru_vs_bare(args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
