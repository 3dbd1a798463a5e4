"""The Time course forecast as points that read: sized by the tracks' own extent, each in its
track's colour, a symbol of their own, drawn from a track's last frame to its last forecast
frame and, for 3-D tracks in a 2-D view, in the z plane shown (as the tracks are)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from scnapse.napari import sample_tracks  # noqa: E402
from scnapse.napari._timecourse import NOW_SIZE, forecast_rows, track_end_colors  # noqa: E402

from conftest import forecast_in_time_course_panel  # noqa: E402

pytestmark = pytest.mark.napari


def test_forecast_rows_draw_each_path_from_the_tracks_end_to_its_last_step():
    pred = np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3)  # 2 tracks × 2 steps × (z, y, x)
    data, feats = forecast_rows(np.array([7, 9]), np.array([4.0, 10.0]), pred, ["z", "y", "x"])
    assert data.shape == (2 * 3 * 2, 4)  # each track's 2 steps, drawn at 3 frames (end, end+1, end+2)
    first = feats["track_id"].to_numpy() == 7
    assert sorted(set(data[first, 0])) == [4.0, 5.0, 6.0]
    np.testing.assert_array_equal(feats.loc[first, "frame"], np.tile([5.0, 6.0], 3))
    # "now": the step forecast for the frame it is drawn at
    assert list(feats.loc[first & feats["now"], "step"]) == [1, 2]
    np.testing.assert_array_equal(data[first & feats["now"].to_numpy(), 0], [5.0, 6.0])
    np.testing.assert_array_equal(data[first][:2, 1:], pred[0])


def test_forecast_points_are_sized_coloured_by_track_and_follow_the_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, kwargs, _ = sample_tracks()[0]
    tracks = viewer.add_tracks(data, scale=(1, 1, 2, 2), **kwargs)
    panel = forecast_in_time_course_panel(viewer, qtbot, hidden=4, max_epochs=1, seed=0)
    fc = viewer.layers["tgmm tracks forecast"]
    assert panel.result_layer is fc
    # in the tracks' world: their scale, a size relative to their extent (not a fixed 3)
    np.testing.assert_array_equal(fc.scale, tracks.scale)
    base = np.ptp(data[:, -2:], axis=0).max() / 60
    now = fc.features["now"].to_numpy()
    np.testing.assert_allclose(fc.size[~now], base)
    np.testing.assert_allclose(fc.size[now], NOW_SIZE * base)
    # a symbol and border of their own
    assert {str(s) for s in fc.symbol} == {"diamond"} and np.allclose(fc.border_color, 1.0)
    # each point in its track's colour: many colours, one per track
    ids = fc.features["track_id"].to_numpy()
    np.testing.assert_allclose(fc.face_color, track_end_colors(tracks, ids))
    per_track = {t: np.unique(fc.face_color[ids == t], axis=0) for t in np.unique(ids)}
    assert all(len(c) == 1 for c in per_track.values())
    assert len(np.unique(fc.face_color.round(3), axis=0)) > 20
    # recolouring the tracks recolours the forecast
    before = fc.face_color.copy()
    tracks.colormap = "viridis"
    assert not np.allclose(fc.face_color, before)
    np.testing.assert_allclose(fc.face_color, track_end_colors(tracks, ids))
    # 3-D tracks in a 2-D view: every forecast point in the z plane shown
    viewer.dims.set_current_step(1, 3)
    z = viewer.dims.point[1]
    np.testing.assert_allclose(fc.data[:, 1], z)
    viewer.dims.set_current_step(1, 12)
    assert viewer.dims.point[1] != z
    np.testing.assert_allclose(fc.data[:, 1], viewer.dims.point[1])
    # seen from the last frame of a track: its whole forecast path is on screen
    seqs = tracks.metadata["adata"]
    track = seqs.obs.iloc[0]
    viewer.dims.set_current_step(0, int(track["end"]))
    qtbot.wait(50)
    shown = np.asarray(fc._view_indices, dtype=int)
    assert set(ids[shown]) >= {track["track_id"]} and (ids[shown] == track["track_id"]).sum() == 2
    # in a 3-D view, each point at its own z
    viewer.dims.ndisplay = 3
    np.testing.assert_allclose(fc.data[:, 1], fc.features["z"])
