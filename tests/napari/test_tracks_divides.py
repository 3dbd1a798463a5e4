"""The bundled tracks sample carries each track's fate (``divides``), so the Time course panel can
classify it from the menu, without a table of one's own."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from scnapse.napari import TimeCourseWidget, sample_tracks  # noqa: E402

pytestmark = pytest.mark.napari


def test_sample_tracks_say_which_divide():
    data, kwargs, kind = sample_tracks()[0]
    divides = kwargs["features"]["divides"].to_numpy()
    assert kind == "tracks" and divides.dtype == bool and len(divides) == len(data)
    per_track = {}
    for track, d in zip(data[:, 0], divides):
        per_track.setdefault(track, set()).add(bool(d))
    assert all(len(v) == 1 for v in per_track.values())  # one fate per track
    n = sum(next(iter(v)) for v in per_track.values())
    assert 30 <= n <= 80 and len(per_track) == 212  # about a quarter of the 212 branches divide (53 in the table)


def test_time_course_panel_classifies_the_sample_by_divides(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, kwargs, _ = sample_tracks()[0]
    tracks = viewer.add_tracks(data, **kwargs)
    panel = TimeCourseWidget(viewer)
    panel.task.value = "classify"
    assert "divides" in [c for c in panel.labels_key.choices if c is not None]
    panel.labels_key.value = "divides"
    panel.hidden.value = 8
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=64, seed=0, threads=1)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    seqs = tracks.metadata["adata"]
    assert set(seqs.obs["predicted"].astype(str)) <= {"True", "False"}
    assert "predicted" in tracks.features and np.isfinite(tracks.features["predicted"]).all()
