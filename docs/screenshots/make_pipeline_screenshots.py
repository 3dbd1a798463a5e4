"""Re-make the screenshots of the Pipeline panel and of an optimizer comparison (under xvfb-run).

    xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python docs/screenshots/make_pipeline_screenshots.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import napari
import scanpy as sc
from PIL import Image
from _qt import pump

import scnapse as sn
from scnapse.napari import sample_pbmc68k
from scnapse.napari._pipeline_panel import PipelineWidget

HERE = Path(__file__).resolve().parent
warnings.filterwarnings("ignore")



viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 950)
data, kwargs, _ = sample_pbmc68k()[0]
layer = viewer.add_points(data, **kwargs)
session = layer.metadata["scnapse_session"]
session.record("scanpy.pp.normalize_total", {"target_sum": 10000})
session.record("scanpy.pp.log1p", {})
session.record("scnapse.tl.autoencoder", {"max_epochs": 30})
session.record("scanpy.pp.neighbors", {"use_rep": "X_autoencoder", "n_neighbors": 15})
session.record("scanpy.tl.umap", {})
panel = PipelineWidget(viewer)
viewer.window.add_dock_widget(panel, name="Pipeline", area="right")
panel.cells.value = layer
panel.run_from(0)
while panel.running:
    pump(0.2)
panel.select(2)
panel.widget("optimizer").value = "sgd"
panel.apply_edit()
pump(1.0)
Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(HERE / "pipeline_panel.png")
viewer.close()

adata = sn.datasets.pbmc68k()
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
sn.tl.compare_runs(adata, vary={"optimizer": ["sgd", "momentum", "rmsprop", "adam"]},
                   fixed={"max_epochs": 40, "pca_init": False}, labels_key="bulk_labels")
sn.pl.compare_runs(adata, save=str(HERE / "compare_optimizers.png"))
