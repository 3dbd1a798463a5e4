"""Longest interface freeze (a 50 ms QTimer heartbeat; freeze = longest gap minus 50 ms) during a
30-epoch Autoencoder run from the panel on the pbmc68k sample, with 1 torch thread. Run under a
display:

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/napari_heartbeat.py [--runs 2]

Each run's gaps are split by phase: the start (Train pressed → first epoch; the first training in a
process also needs torch's optimiser stack, which the first panel starts loading in the background
when it opens; ``--wait`` is the time between opening the panel and pressing Train, 3 s by default), training (first → last epoch) and the
end (last epoch → the embedding shown). The end of a run is shown in short steps; their times on
the GUI thread (wall / CPU) are printed too. A second run in the same process shows the warm case
(no imports; the embedding's layer is updated in place).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

torch.set_num_threads(1)

import napari  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from scnapse.napari import AutoencoderWidget, sample_pbmc68k  # noqa: E402


def one_run(panel, app) -> dict:
    beats, reports = [], []

    def on_report(_r):
        reports.append(time.perf_counter())

    panel._relay.report.connect(on_report)
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    draws = panel.loss_plot.full_draws
    start = time.perf_counter()
    panel.run()
    while panel.running:
        app.processEvents()
        time.sleep(0.002)
    end = time.perf_counter()
    for _ in range(50):  # the paints that follow the last step
        app.processEvents()
        time.sleep(0.01)
    timer.stop()
    panel._relay.report.disconnect(on_report)
    b = np.asarray(beats)

    def longest(lo, hi):
        inside = b[(b >= lo) & (b <= hi)]
        # a gap counts in the phase where it ends
        gaps = [y - x for x, y in zip(b[:-1], b[1:]) if lo < y <= hi]
        return max(gaps) if gaps else float("nan"), len(inside)

    gaps = np.diff(b[b >= start])
    return {"epochs": len(reports), "training_s": reports[-1] - reports[0],
            "longest": gaps.max(), "over_200": int((gaps > 0.2).sum()),
            "start": longest(start, reports[0])[0], "training": longest(reports[0], reports[-1])[0],
            "end": longest(reports[-1], b[-1])[0], "median": float(np.median(gaps)),
            "slices": list(getattr(panel, "end_slices", [])), "full_draws": panel.loss_plot.full_draws - draws,
            "shown_in": end - reports[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs in one process (the second is warm)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--wait", type=float, default=3.0,
                        help="seconds between opening the panel and pressing Train (a person picks options)")
    args = parser.parse_args()
    viewer = napari.Viewer(show=True)
    data, kw, _ = sample_pbmc68k()[0]
    viewer.add_points(data, **kw)
    panel = AutoencoderWidget(viewer)
    viewer.window.add_dock_widget(panel)
    panel.train_options.set_values(max_epochs=args.epochs, early_stopping=0)
    app = QApplication.instance()
    for _ in range(10):
        app.processEvents()
    until = time.perf_counter() + args.wait
    while time.perf_counter() < until:
        app.processEvents()
        time.sleep(0.01)
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    for i in range(args.runs):
        r = one_run(panel, app)
        ms = {k: round(1000 * r[k]) for k in ("longest", "start", "training", "end", "median")}
        print(f"run {i + 1}: epochs {r['epochs']}, training {r['training_s']:.1f} s; longest gap {ms['longest']} ms "
              f"(start {ms['start']}, while training {ms['training']}, end {ms['end']}; median {ms['median']}); "
              f"gaps > 200 ms: {r['over_200']}; full plot draws {r['full_draws']}")
        print("  end of run on the GUI thread, ms (wall/CPU): "
              + ", ".join(f"{name} {1000 * wall:.0f}/{1000 * cpu:.0f}" for name, wall, cpu in r["slices"])
              + f"; last epoch → shown {1000 * r['shown_in']:.0f} ms")
    print(panel.status.text())


if __name__ == "__main__":
    main()
