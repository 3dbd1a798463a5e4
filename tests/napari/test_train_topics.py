"""The training options by topic (cost · architecture and activation · regularization · optimizer,
then running), the rarely changed ones folded; a "threads" field passed to the training and kept in
the session's pipeline."""

from __future__ import annotations

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from scnapse._settings import resolve_threads, settings  # noqa: E402
from scnapse.napari import AutoencoderWidget, CellClassifierWidget, ImageModelWidget, TimeCourseWidget  # noqa: E402
from scnapse.napari import get_adata  # noqa: E402
from scnapse.napari._train_options import TOPICS, TrainOptions  # noqa: E402
from scnapse.train import TrainConfig  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari


def test_options_are_grouped_by_topic_with_the_rare_ones_folded(qtbot):
    opts = TrainOptions(exclude=())
    qtbot.addWidget(opts.native)
    assert [t for t, *_ in TOPICS][:4] == ["cost", "architecture", "regularization", "optimizer"]
    assert opts.topic_of("cost") == ("cost", False)
    assert opts.topic_of("activation") == ("architecture", False)
    assert opts.topic_of("dropout") == ("regularization", False)
    assert opts.topic_of("l1") == ("regularization", True)
    assert opts.topic_of("lr") == ("optimizer", False)
    assert opts.topic_of("momentum") == ("optimizer", True)
    assert opts.topic_of("threads") == ("running", True)
    # every field is in exactly one topic
    for name in opts.field_names:
        opts.topic_of(name)
    # folded until asked for, then shown
    assert not opts.is_unfolded("regularization")
    opts.native.show()
    assert not opts.widget("l1").native.isVisible()
    assert opts.widget("dropout").native.isVisible()
    _, _, button = opts.groups["regularization"]
    button.native.click()
    assert opts.is_unfolded("regularization") and opts.widget("l1").native.isVisible()
    assert button.text.startswith("▾ Regularization")
    button.native.click()
    assert not opts.widget("l1").native.isVisible()
    # folded fields still count
    opts.set_values(l1=1e-3)
    assert opts.values()["l1"] == 1e-3


@pytest.mark.parametrize("panel_type", (AutoencoderWidget, CellClassifierWidget, ImageModelWidget, TimeCourseWidget),
                         ids=lambda p: p.__name__)
def test_panels_fit_in_1000_px_folded(panel_type, make_napari_viewer):
    viewer = make_napari_viewer()
    panel = panel_type(viewer)
    viewer.window.add_dock_widget(panel, name=panel_type.__name__)
    assert panel.sizeHint().height() <= 1000  # the rest scrolls
    folded = panel.train_options.native.sizeHint().height()
    assert folded <= 360, folded  # about 12 rows: the usual fields and 5 headings
    for topic in panel.train_options.groups:
        panel.train_options.unfold(topic)
    assert panel.train_options.native.sizeHint().height() > folded + 100


def test_threads_default_is_the_packages_and_is_validated(qtbot):
    opts = TrainOptions()
    assert opts.widget("threads").value == resolve_threads(settings.n_threads)
    opts.set_values(threads=1)
    values = opts.values()
    assert values["threads"] == 1
    assert "threads" not in TrainConfig.field_names()
    # a recurrent step's default is the count the step itself would use
    assert TrainOptions(workload="recurrent").widget("threads").value == resolve_threads(None, "recurrent")


def test_time_course_threads_default_is_the_recurrent_one(make_napari_viewer):
    panel = TimeCourseWidget(make_napari_viewer())
    assert panel.train_options.widget("threads").value == resolve_threads(None, "recurrent")


def test_threads_reach_the_training_and_the_saved_pipeline(tmp_path, make_napari_viewer, qtbot):
    import yaml

    adata = make_counts()
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="scnapse")
    panel = AutoencoderWidget(viewer)
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=64, validation_fraction=0.2,
                                   threads=1)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.last_error is None, panel.last_error
    prov = get_adata(layer).uns["autoencoder"]
    assert prov["params"].get("threads", 1) == 1
    panel.save_pipeline(tmp_path / "p.yaml", script=False)
    steps = yaml.safe_load((tmp_path / "p.yaml").read_text())["steps"]
    (ae,) = [s for s in steps if s["step"] == "scnapse.tl.autoencoder"]
    assert ae["params"]["threads"] == 1
