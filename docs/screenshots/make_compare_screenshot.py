"""Re-make the screenshot of an optimizer comparison in the Compare runs panel (under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/make_compare_screenshot.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import napari
import scanpy as sc
from PIL import Image
from _qt import pump

import scnapse as sn
from scnapse.napari._compare_panel import CompareRunsWidget
from scnapse.napari._layers import adata_layer_data

OUT = Path(__file__).resolve().parents[1] / "figures" / "compare_runs.png"
warnings.filterwarnings("ignore")



adata = sn.datasets.pbmc68k()
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1600, 1000)
data, kwargs, _ = adata_layer_data(adata, color_by="bulk_labels", name="pbmc68k")
layer = viewer.add_points(data, **kwargs)
panel = CompareRunsWidget(viewer)
panel.setMinimumWidth(620)
viewer.window.add_dock_widget(panel, name="Compare runs", area="right")
panel.cells.value = layer
panel.max_epochs.value = 30
panel.fixed.value = "pca_init: false"
panel.labels_key.value = "bulk_labels"
panel.run()
while panel.running:
    pump(0.2)
layer.visible = False
viewer.reset_view()
pump(1.5)
Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(OUT)
print(adata.uns["compare_runs"]["table"][["final_val_loss", "best_val_loss", "knn_accuracy", "seconds"]])
viewer.close()
