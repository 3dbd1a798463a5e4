"""Re-make the README's screenshots of the napari panels (needs a display: run under xvfb-run).

    xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python docs/screenshots/make_screenshots.py
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import napari  # noqa: E402
from PIL import Image  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

from scnapse.im import sample_image  # noqa: E402
from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, CellsWidget, ImageModelWidget, sample_pbmc68k,
)

HERE = Path(__file__).resolve().parent
warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
warnings.filterwarnings("ignore", message=".*System theme detection.*")


def wait(panel, timeout=600):
    app = QApplication.instance()
    t0 = time.time()
    while panel.running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()
    if panel.last_error:
        raise RuntimeError(panel.last_error)


def save(viewer, name, width=1000):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        if "PyQt5" in toast.message.text():  # napari's start-up notice, not ours
            toast.close()
    for _ in range(10):
        QApplication.instance().processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    pil = Image.fromarray(img[..., :3])
    pil = pil.resize((width, round(pil.height * width / pil.width)), Image.LANCZOS)
    pil.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(HERE / name, optimize=True)
    print("wrote", HERE / name, (HERE / name).stat().st_size // 1024, "KiB")


def pbmc_viewer():
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 950)
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    return viewer, layer


# 1. autoencoder: training choices, live loss curves, the embedding coloured by cell type
viewer, layer = pbmc_viewer()
ae = AutoencoderWidget(viewer)
viewer.window.add_dock_widget(ae, name="scnapse: Autoencoder", area="right")
ae.train_options.set_values(max_epochs=60, early_stopping=10, seed=0)
ae.run()
wait(ae)
save(viewer, "autoencoder_panel.png")
viewer.close()

# 2. cell classifier: trained on bulk_labels, cells coloured by the prediction, with the legend
viewer, layer = pbmc_viewer()
clf = CellClassifierWidget(viewer)
cells = CellsWidget(viewer)
viewer.window.add_dock_widget(clf, name="scnapse: Cell classifier", area="right")
viewer.window.add_dock_widget(cells, name="scnapse: Cells", area="left")
clf.labels_key.value = "bulk_labels"
clf.train_options.set_values(max_epochs=40, seed=0)
clf.run()
wait(clf)
cells._refresh()
viewer.reset_view()
save(viewer, "classifier_panel.png")
viewer.close()

# 3. image model: a few nuclei clicked per class, every nucleus classified and painted
image, labels = sample_image("dsb2018")
viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 950)
viewer.add_image(image, name="nuclei")
lab = viewer.add_labels(labels, name="nuclei labels")
panel = ImageModelWidget(viewer)
viewer.window.add_dock_widget(panel, name="scnapse: Image model", area="right")
ids, areas = np.unique(labels[labels > 0], return_counts=True)
order = ids[np.argsort(areas)]
ann = panel.annotation_layer()
for cls, chosen in (("small", order[:5]), ("large", order[-5:])):
    panel.class_name.value = cls
    for i in chosen:
        pix = np.argwhere(labels == i)
        ann.add(pix[len(pix) // 2].astype(float))
panel.train_options.set_values(max_epochs=15, seed=0)
panel.run()
wait(panel)
lab.opacity = 0.8
viewer.reset_view()
save(viewer, "image_panel.png")
viewer.close()
