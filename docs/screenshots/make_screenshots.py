"""Re-make the screenshots of the napari panels (needs a display: run under xvfb-run).

    OMP_NUM_THREADS=1 QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24" \
        .venv/bin/python docs/screenshots/make_screenshots.py

Writes, in this folder: ``autoencoder_panel.png`` (a short run on the PBMC 68k sample: the options
by topic, the loss plot naming its cost and marking the best epoch, the done line, the legend),
``training_topics.png`` (the whole Autoencoder panel after that run), ``classifier_panel.png``
(cells coloured by the predicted class, "Unassigned" grey, with the legend), ``image_panel.png``
(nuclei classified from a few clicked examples, painted by class, with the legend),
``timecourse_panel.png`` (the tracks sample classified by ``divides``), ``timecourse_forecast.png``
(its forecast: each track's next steps as diamonds in the track's colour), and
``../figures/scatter_view.png`` (the autoencoder embedding in the scatter view, a cluster selected
there and highlighted in the viewer). Training is short (a few epochs, one thread): the pictures
show the panels, not the best models.
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
from _qt import pump  # noqa: E402

from scnapse.im import sample_image  # noqa: E402
from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, CellsWidget, ImageModelWidget, TimeCourseWidget, open_scatter,
    sample_pbmc68k, sample_tracks,
)

HERE = Path(__file__).resolve().parent
FIGURES = HERE.parent / "figures"
WINDOW = (1280, 980)
warnings.filterwarnings("ignore", message=".*backend is deprecated.*")
warnings.filterwarnings("ignore", message=".*System theme detection.*")



def wait(panel, timeout=600):
    t0 = time.time()
    while panel.running and time.time() - t0 < timeout:
        pump(0.05)
    pump(1.0)
    if panel.last_error:
        raise RuntimeError(panel.last_error)


def close_toasts(viewer):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    pump(0.3)


def write(img: Image.Image, path: Path, width: int | None = None) -> None:
    img = img.convert("RGB")
    if width is not None and img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.save(path, optimize=True)
    if path.stat().st_size > 380_000:  # keep the pictures small: fewer colours (swatches stay exact enough)
        img.quantize(colors=255, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    print("wrote", path, img.size, path.stat().st_size // 1024, "KiB")


def save(viewer, name, width=1100, folder=HERE):
    """The whole napari window (canvas, layer list, docks)."""
    close_toasts(viewer)
    img = viewer.screenshot(canvas_only=False, flash=False)
    write(Image.fromarray(img[..., :3]), folder / name, width)


def grab(widget, name, width=None):
    """One widget, all of it (a panel's scrolled body shows everything, not only what fits)."""
    pump(0.3)
    path = HERE / name
    widget.grab().save(str(path))
    write(Image.open(path), path, width)


def scroll_to_end(panel):
    bar = panel.scroll.verticalScrollBar()
    bar.setValue(bar.maximum())
    pump(0.3)


def new_viewer():
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    pump(0.5)
    return viewer


def pbmc_viewer():
    viewer = new_viewer()
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    return viewer, layer


SHORT = dict(seed=0, threads=1)

# 1. autoencoder: options by topic, the loss plot (cost named, best epoch marked), the done line, legend
viewer, layer = pbmc_viewer()
ae = AutoencoderWidget(viewer)
viewer.window.add_dock_widget(ae, name="scnapse: Autoencoder", area="right")
ae.train_options.set_values(max_epochs=25, early_stopping=0, **SHORT)
ae.run()
wait(ae)


def fit(viewer, layer, zoom=0.9):
    """Frame one layer's points (the hidden UMAP layer would make the new embedding tiny)."""
    viewer.reset_view()
    lo, hi = layer.data.min(axis=0), layer.data.max(axis=0)
    viewer.camera.center = tuple((lo + hi) / 2)
    canvas = viewer.window._qt_viewer.canvas.size
    viewer.camera.zoom = zoom * min(np.array(canvas[::-1]) / np.maximum(hi - lo, 1e-9))
    pump(0.3)


fit(viewer, viewer.layers.selection.active)
scroll_to_end(ae)
save(viewer, "autoencoder_panel.png")
grab(ae.scroll.widget(), "training_topics.png")

# 2. the scatter view of that embedding, coloured by cell type, one cluster selected in the plot
view = open_scatter(viewer, viewer.layers.selection.active or layer, "X_autoencoder", color_by="bulk_labels")
pump(1.0)
xy = view.xy
codes = layer.metadata["adata"].obs["bulk_labels"].cat.codes.to_numpy()
target = np.bincount(codes).argmax()
centre = np.median(xy[codes == target], axis=0)
spread = np.percentile(np.abs(xy[codes == target] - centre), 80, axis=0)
view.select_box((centre[0] - spread[0], centre[0] + spread[0]), (centre[1] - spread[1], centre[1] + spread[1]))
pump(1.0)
for dock in list(viewer.window._dock_widgets.values()):
    if "Autoencoder" in dock.name:
        dock.hide()  # the canvas and the scatter view side by side
pump(0.5)
fit(viewer, viewer.layers.selection.active)
save(viewer, "scatter_view.png", folder=FIGURES)
viewer.close()

# 3. cell classifier: trained on bulk_labels, cells coloured by the prediction, with the legend
viewer, layer = pbmc_viewer()
clf = CellClassifierWidget(viewer)
cells = CellsWidget(viewer)
viewer.window.add_dock_widget(clf, name="scnapse: Cell classifier", area="right")
viewer.window.add_dock_widget(cells, name="scnapse: Cells", area="left")
clf.labels_key.value = "bulk_labels"
clf.min_confidence.value = 0.5  # cells the classifier is unsure of stay "Unassigned" (grey)
clf.train_options.set_values(max_epochs=20, **SHORT)
clf.run()
wait(clf)
cells._refresh()
viewer.reset_view()
scroll_to_end(clf)
save(viewer, "classifier_panel.png")
viewer.close()

# 4. image model: a few nuclei clicked per class, every nucleus classified and painted, with the legend
image, labels = sample_image("dsb2018")
viewer = new_viewer()
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
panel.train_options.set_values(max_epochs=8, **SHORT)
panel.run()
wait(panel)
lab.opacity = 0.8
viewer.reset_view()
scroll_to_end(panel)
save(viewer, "image_panel.png")
viewer.close()

# 5. time course: the tracks sample classified by divides, tracks coloured by the predicted class
viewer = new_viewer()
data, kwargs, _ = sample_tracks()[0]
tracks = viewer.add_tracks(data, **kwargs)
tc = TimeCourseWidget(viewer)
viewer.window.add_dock_widget(tc, name="scnapse: Time course", area="right")
tc.task.value = "classify"
tc.labels_key.value = "divides"
tc.train_options.set_values(max_epochs=15, **SHORT)
tc.run()
wait(tc)
tracks.tail_length = int(data[:, 1].max()) + 1  # whole tracks, not the last few steps
viewer.dims.set_current_step(0, int(data[:, 1].max()))
viewer.reset_view()
scroll_to_end(tc)
save(viewer, "timecourse_panel.png")
viewer.close()

# 6. time course: the forecast of the tracks sample, each track's next steps as diamonds in its colour
viewer = new_viewer()
data, kwargs, _ = sample_tracks()[0]
tracks = viewer.add_tracks(data, **kwargs)
tc = TimeCourseWidget(viewer)
viewer.window.add_dock_widget(tc, name="scnapse: Time course", area="right")
tc.task.value = "forecast"
tc.horizon.value = 3
tc.train_options.set_values(max_epochs=15, **SHORT)
tc.run()
wait(tc)
tracks.tail_length = 10  # the last steps observed, then the forecast ahead
viewer.layers.selection.active = tracks
viewer.dims.set_current_step(0, int(data[:, 1].max()) + 1)  # the first forecast frame
viewer.reset_view()
viewer.camera.zoom *= 2.2  # a corner of the sample, where the diamonds and the tails read
viewer.camera.center = (0, 60, 40)
scroll_to_end(tc)
save(viewer, "timecourse_forecast.png")
viewer.close()
