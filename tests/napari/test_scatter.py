"""The scatter view: an embedding in a plot of its own, coloured by an obs column with a legend,
selections linked both ways with cells (Points), image objects (Labels) and tracks (Tracks)."""

from __future__ import annotations

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from scnapse.napari import ScatterView, adata_layer_data, cell_colors, open_scatter  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari


def cells_with_embedding():
    adata = make_counts()
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    adata.obsm["X_autoencoder"] = np.c_[codes * 10.0, codes * -4.0, rng.normal(size=adata.n_obs)] \
        + rng.normal(0, 0.5, (adata.n_obs, 3))
    return adata


def drag(view, points):
    """Press, move through ``points`` (data coordinates) and release the left button on the plot."""
    from matplotlib.backend_bases import MouseEvent

    view.canvas.draw()
    pixels = view.ax.transData.transform(np.asarray(points, dtype=float))
    MouseEvent("button_press_event", view.canvas, *pixels[0], button=1)._process()
    for x, y in pixels[1:]:
        MouseEvent("motion_notify_event", view.canvas, x, y, button=1)._process()
    MouseEvent("button_release_event", view.canvas, *pixels[-1], button=1)._process()


def test_scatter_view_of_cells_links_selections_both_ways(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    adata = cells_with_embedding()
    data, kwargs, _ = adata_layer_data(adata, obsm_key="X_autoencoder", color_by="cell_type")
    layer = viewer.add_points(data, **kwargs)
    view = open_scatter(viewer, layer, "X_autoencoder", color_by="cell_type")
    assert open_scatter(viewer, layer, "X_autoencoder") is view  # one view per viewer
    np.testing.assert_allclose(view.xy, adata.obsm["X_autoencoder"][:, :2])
    # coloured by the column, with its legend drawn on the plot
    _, legend = cell_colors(adata, "cell_type")
    assert view.legend == legend
    drawn = {t.get_text() for t in view.ax.get_legend().get_texts()}
    assert drawn == set(legend)  # (names of 24+ characters are shortened)
    np.testing.assert_allclose(view._points.get_facecolors()[:, :3],
                               np.array([mcolors.to_rgb(legend[str(c)]) for c in adata.obs["cell_type"]]))

    # a rectangle around the first type's cluster selects exactly its cells, in the viewer too
    first = adata.obs["cell_type"].cat.codes.to_numpy() == 0
    rows = view.select_box((-5, 5), (-5, 5))
    assert set(rows) == set(np.flatnonzero(first))
    assert set(layer.selected_data) == set(rows)
    assert np.all(layer.border_width[rows] > 0) and np.all(layer.border_width[~first] == 0)
    faces = view._points.get_facecolors()
    assert np.all(faces[rows, 3] == 1.0) and np.all(faces[~first, 3] < 0.5)

    # a lasso drawn with the mouse on the canvas selects the second cluster
    second = np.flatnonzero(adata.obs["cell_type"].cat.codes.to_numpy() == 1)
    drag(view, [(5, -9), (15, -9), (15, 1), (5, 1), (5, -9)])
    assert set(view.selected) == set(second) and set(layer.selected_data) == set(second)

    view.tool.value = "rectangle"  # the rectangle tool, with the mouse
    (x0, _), (_, y1) = view.ax.get_xlim(), view.ax.get_ylim()
    drag(view, [(x0 + 0.3, -2.0), (5, y1 - 0.1)])  # the first cluster, from the plot's corner
    assert set(view.selected) == set(np.flatnonzero(first))

    # selecting in the viewer highlights the points in the scatter
    layer.selected_data = {0, 1, 2}
    assert list(view.selected) == [0, 1, 2]

    # a step that writes a new embedding under the same key: the view follows
    from scnapse.napari._scatter import refresh_scatter

    adata.obsm["X_autoencoder"] = adata.obsm["X_autoencoder"] * 2
    refresh_scatter(viewer)
    np.testing.assert_allclose(view.xy, adata.obsm["X_autoencoder"][:, :2])

    # other dimensions and another colouring
    view.dims.value = "1, 2"
    view.dims.native.editingFinished.emit()
    np.testing.assert_allclose(view.xy, adata.obsm["X_autoencoder"][:, 1:3])
    adata.obs["score"] = np.linspace(0, 1, adata.n_obs)
    view._refresh()
    view.color_by.value = "score"
    assert set(view.legend) == {"0", "1"}
    view.grab().save(str(tmp_path / "scatter.png"))


def test_scatter_view_selects_image_objects_and_tracks(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 40), dtype=np.int32)
    for i, (y, x) in enumerate([(5, 5), (5, 30), (30, 5), (30, 30)], start=1):
        labels[y - 3:y + 3, x - 3:x + 3] = i
    cells = ad.AnnData(obs=pd.DataFrame({"label": [1, 2, 3, 4], "kind": pd.Categorical(["a", "a", "b", "b"])},
                                        index=[f"c{i}" for i in range(4)]))
    cells.obsm["X_cnn"] = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
    lab = viewer.add_labels(labels, name="nuclei")
    lab.metadata["adata"] = cells
    view = ScatterView(viewer)
    view.show(lab, "X_cnn", color_by="kind")
    view.select_box((0.9, 2), (0.9, 2))
    sel = viewer.layers["nuclei (selected)"]
    assert set(np.unique(labels[sel.data > 0])) == {3, 4}
    view.select([])
    assert "nuclei (selected)" not in viewer.layers
    lab.selected_label = 2  # picking an object in the viewer selects its point
    assert list(view.selected) == [1]

    # tracks: the selected tracks are drawn on a layer of their own
    rows = [[t, f, f * 2.0, t * 10.0] for t in (1, 2, 3) for f in range(4)]
    tracks = viewer.add_tracks(np.array(rows), name="tracks")
    seqs = ad.AnnData(obs=pd.DataFrame({"track_id": [1, 2, 3]}, index=["1", "2", "3"]))
    seqs.obsm["X_rnn"] = np.array([[0.0, 0.0], [0.3, 0.1], [0.5, 0.6]])
    tracks.metadata["adata"] = seqs
    view.show(tracks, "X_rnn", color_by=None)
    view.select_box((0.2, 1), (0.05, 1))
    assert set(viewer.layers["tracks (selected)"].data[:, 0]) == {2, 3}
    # a click on a track in the viewer (time 2, on track 3's position) selects its point
    from scnapse.napari._scatter import nearest_track

    assert nearest_track(tracks, (2, 4.0, 30.0)) == 3 and nearest_track(tracks, (2, 4.0, 15.0)) is None
    assert any(cb.__qualname__.endswith("_track_clicked.<locals>.callback") for cb in tracks.mouse_drag_callbacks)
    view.select_track(tracks, nearest_track(tracks, (2, 4.0, 20.5)))
    assert list(view.selected) == [1]
    assert set(viewer.layers["tracks (selected)"].data[:, 0]) == {2}


def test_image_and_tracks_sources_listed_only_with_an_embedding(make_napari_viewer):
    viewer = make_napari_viewer()
    view = ScatterView(viewer)
    assert view.source.value is None and view.xy.shape == (0, 2)
    adata = cells_with_embedding()
    data, kwargs, _ = adata_layer_data(adata, obsm_key="X_autoencoder")
    layer = viewer.add_points(data, **kwargs)
    assert view.source.value is layer  # follows layer additions
    with pytest.raises(KeyError, match="X_nothing"):
        view.show(layer, "X_nothing")
