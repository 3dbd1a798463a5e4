"""What a session saves: a run dropped before saving is gone from the pipeline; a classifier
trained in a panel (cells, image, time course) is saved as its training step plus its predict step,
on the data the panel started from (the cells, the image and its labels, the tracks' table), and
the saved pipeline re-runs (``scnapse run``) to the same predictions."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from scnapse.napari import CellClassifierWidget, ClassicWidget, get_adata  # noqa: E402
from scnapse.napari._pipeline_panel import PipelineWidget  # noqa: E402
from scnapse.pipeline import Pipeline  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari


@pytest.fixture
def cells(tmp_path, make_napari_viewer):
    adata = make_counts()
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="scnapse")
    return viewer, layer


def test_a_run_dropped_before_saving_is_not_saved(cells, tmp_path, qtbot):
    viewer, layer = cells
    panel = ClassicWidget(viewer)
    panel.method.value = "pca"
    for _ in range(2):  # two experimental runs
        panel.run()
        qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
        assert panel.last_error is None, panel.last_error
    steps = PipelineWidget(viewer)
    steps.cells.value = layer
    steps.refresh()
    n = steps.steps.count()
    assert n >= 2
    steps.steps.setCurrentRow(0)
    steps.drop_selected()
    assert steps.steps.count() == n - 1
    files = panel.save_pipeline(tmp_path / "p.yaml", script=False)
    assert len(Pipeline.from_yaml(files[0]).steps) == n - 1


def test_a_gui_classifier_exports_as_training_plus_annotate_and_reruns(cells, tmp_path, qtbot):
    viewer, layer = cells
    panel = CellClassifierWidget(viewer)
    panel.labels_key.value = "cell_type"
    panel.hidden.value = "16"
    panel.train_options.set_values(max_epochs=5, early_stopping=0, seed=3, threads=1)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.last_error is None, panel.last_error
    predicted = get_adata(layer).obs["predicted"].astype(str).to_numpy()
    files = panel.save_pipeline(tmp_path / "classify.yaml", script=False)
    pipe = Pipeline.from_yaml(files[0])
    assert [s.name for s in pipe.steps] == ["scnapse.tl.train_classifier", "scnapse.tl.annotate"]
    train, annotate = pipe.steps
    assert annotate.params["model"] == train.id  # the model is re-trained, not read from a folder
    assert train.params["labels_key"] == "cell_type" and train.params["threads"] == 1
    assert not (tmp_path / "classify_models").exists()
    out = tmp_path / "again.h5ad"
    run = subprocess.run([sys.executable, "-m", "scnapse", "run", str(files[0]), "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    again = ad.read_h5ad(out)
    assert list(again.obs["predicted"].astype(str)) == list(predicted)
    np.testing.assert_allclose(again.obs["predicted_confidence"], get_adata(layer).obs["predicted_confidence"],
                               rtol=1e-5)


def _rerun(path, out):
    """``scnapse run PATH --output OUT`` in a fresh process; the AnnData it wrote."""
    run = subprocess.run([sys.executable, "-m", "scnapse", "run", str(path), "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return ad.read_h5ad(out)


def test_a_gui_image_classifier_exports_as_its_steps_from_the_image_and_reruns(tmp_path, make_napari_viewer, qtbot):
    from scnapse.im import sample_image
    from scnapse.napari import ImageModelWidget

    image, labels = (a[:96, :96] for a in sample_image("dsb2018"))
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei")
    lab = viewer.add_labels(labels, name="nuclei labels")
    panel = ImageModelWidget(viewer)
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    order = ids[np.argsort(areas)]
    ann = panel.annotation_layer()
    for cls, chosen in (("small", order[:2]), ("large", order[-2:])):
        panel.class_name.value = cls
        for i in chosen:
            pix = np.argwhere(labels == i)
            ann.add(pix[len(pix) // 2].astype(float))
    panel.size.value = 16
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=16, seed=5, threads=1)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    cells = lab.metadata["adata"]
    # the Pipeline panel's re-run (from the cells as first made, before any click) gives the same
    from scnapse.pipeline.replay import rerun_from

    replayed = rerun_from(lab.metadata["scnapse_session"], 0)
    np.testing.assert_array_equal(replayed.obs["predicted_class_confidence"], cells.obs["predicted_class_confidence"])
    files = panel.save_pipeline(tmp_path / "image.yaml")
    pipe = Pipeline.from_yaml(files[0])
    # the cells are re-made from the image and its labels with the panel's crop options
    assert set(pipe.input) >= {"image", "labels", "size"} and pipe.input["size"] == 16
    assert [s.name for s in pipe.steps] == ["scnapse.im.mark_classes", "scnapse.tl.train_image_classifier",
                                            "scnapse.tl.annotate_images"]
    mark, train, predict = pipe.steps
    assert mark.params["classes"] == {"small": sorted(int(i) for i in order[:2]),
                                      "large": sorted(int(i) for i in order[-2:])}
    assert predict.params["model"] == train.id and train.params["seed"] == 5 and train.params["threads"] == 1
    assert not (tmp_path / "image_models").exists()
    again = _rerun(files[0], tmp_path / "again.h5ad")
    assert list(again.obs["predicted_class"].astype(str)) == list(cells.obs["predicted_class"].astype(str))
    np.testing.assert_array_equal(again.obs["predicted_class_confidence"], cells.obs["predicted_class_confidence"])
    # the script exported beside it computes the same
    assert "scnapse.im.mark_classes(adata" in open(files[1]).read()


def test_a_gui_forecaster_exports_as_training_plus_forecast_and_reruns(tmp_path, make_napari_viewer, qtbot):
    from conftest import forecast_in_time_course_panel
    from scnapse.napari import sample_tracks

    viewer = make_napari_viewer()
    data, kwargs, _ = sample_tracks()[0]
    ids = np.unique(data[:, 0]).astype(int)
    tracks = viewer.add_tracks(data, graph={int(ids[1]): [int(ids[0])], int(ids[2]): [int(ids[0])]}, **kwargs)
    panel = forecast_in_time_course_panel(viewer, qtbot, hidden=8, max_epochs=2, seed=2)
    seqs = tracks.metadata["adata"]
    files = panel.save_pipeline(tmp_path / "tracks.yaml", script=False)
    pipe = Pipeline.from_yaml(files[0])
    # the sequences are re-made from the tracks' table (and lineage), as the panel made them
    assert pipe.input["tracks"].endswith("tracks_tracks.csv")
    assert pipe.input["graph"] == {int(ids[1]): [int(ids[0])], int(ids[2]): [int(ids[0])]}
    assert [s.name for s in pipe.steps] == ["scnapse.tl.train_forecaster", "scnapse.tl.forecast"]
    train, forecast = pipe.steps
    assert forecast.params["model"] == train.id and train.params["horizon"] == 2
    assert train.params["seed"] == 2 and train.params["threads"] == 1 and train.params["hidden"] == [8]
    assert not (tmp_path / "tracks_models").exists()
    again = _rerun(files[0], tmp_path / "again.h5ad")
    np.testing.assert_array_equal(again.obsm["sequence"], seqs.obsm["sequence"])
    assert list(again.obs["divides"]) == list(seqs.obs["divides"]) and list(again.obs["parent"]) == list(seqs.obs["parent"])
    assert (seqs.obs["parent"] == ids[0]).sum() == 2
    np.testing.assert_array_equal(again.obsm["forecast"], seqs.obsm["forecast"])
