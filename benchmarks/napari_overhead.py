"""What the napari panel costs over the API: the same autoencoder trained by ``sn.tl.autoencoder``
and by the Autoencoder panel (worker thread, live loss plot, progress bar), and whether they give
the same embedding. Run under a display:

    xvfb-run -a .venv/bin/python benchmarks/napari_overhead.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

torch.set_num_threads(1)

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

import scnapse as sn  # noqa: E402
from scnapse.napari import AutoencoderWidget, sample_pbmc68k  # noqa: E402

sn.settings.verbosity = 30
OPTIONS = {"max_epochs": 30, "early_stopping": 0, "seed": 0, "device": "cpu"}


def api() -> tuple[float, np.ndarray]:
    adata = sn.datasets.pbmc68k()
    t0 = time.perf_counter()
    sn.tl.autoencoder(adata, progress=False, **OPTIONS)
    return time.perf_counter() - t0, adata.obsm["X_autoencoder"]


def panel(viewer) -> tuple[float, np.ndarray, int]:
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    w = AutoencoderWidget(viewer)
    w.cells.value = layer
    w.train_options.set_values(**OPTIONS)
    app = QApplication.instance()
    t0 = time.perf_counter()
    w.run()
    while w.running:
        app.processEvents()
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    if w.last_error:
        raise RuntimeError(w.last_error)
    out = layer.metadata["adata"].obsm["X_autoencoder"]
    n_plotted = len(w.loss_plot.epochs)
    w.close()
    viewer.layers.clear()
    return seconds, out, n_plotted


viewer = napari.Viewer(show=True)
api_s, gui_s = [], []
for _ in range(3):
    s, emb_api = api()
    api_s.append(s)
    s, emb_gui, n_plotted = panel(viewer)
    gui_s.append(s)
same = np.allclose(emb_api, emb_gui, rtol=1e-5, atol=1e-6)
print(f"pbmc68k (700 cells x 765 genes), autoencoder, {OPTIONS['max_epochs']} epochs, CPU, 1 torch thread")
print(f"API   sn.tl.autoencoder : median {statistics.median(api_s):.2f} s  (runs {[round(x, 2) for x in api_s]})")
print(f"napari Autoencoder panel: median {statistics.median(gui_s):.2f} s  (runs {[round(x, 2) for x in gui_s]})")
print(f"epochs drawn on the live loss plot: {n_plotted}; same embedding as the API: {same}")
