"""What a session saves: a run dropped before saving is gone from the pipeline; a classifier
trained in the panel is saved as its training step plus annotate, and the saved pipeline re-runs
(``scnapse run``) to the same predictions."""

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
