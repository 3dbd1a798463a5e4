"""The napari plugin under Xvfb: manifest, reader/writer, generated training panel, panels that
train to the end, cancel, errors as notifications, exported pipelines that reproduce the GUI,
and screenshots whose pixels show the result's colours (saved under test-artifacts/)."""

from __future__ import annotations

from pathlib import Path

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from scnapse._settings import available_devices  # noqa: E402
from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, CellsWidget, ClassicWidget, TrainOptions, cell_colors, embedding_coords, get_adata,
    napari_get_reader, write_h5ad,
)
from scnapse.pipeline import Pipeline  # noqa: E402
from scnapse.train.config import MOMENTUM_OPTIMIZERS, TrainConfig, literal_choices  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FAST = {"max_epochs": 3, "early_stopping": 0, "batch_size": 64, "validation_fraction": 0.2}


@pytest.fixture
def h5ad_path(tmp_path) -> Path:
    """120 cells × 40 genes of counts, 3 types, with a 2-D 'X_umap' to open on."""
    adata = make_counts()
    rng = np.random.default_rng(1)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm["X_umap"] = np.c_[codes * 10.0, codes * -5.0] + rng.normal(0, 1, (adata.n_obs, 2))
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def open_cells(viewer, path):
    layers = viewer.open(str(path), plugin="scnapse")
    assert len(layers) == 1
    return layers[0]


def wait_done(qtbot, panel, timeout=60_000):
    qtbot.waitUntil(lambda: not panel.running, timeout=timeout)


def screenshot(viewer, name) -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    img = viewer.screenshot(canvas_only=True, flash=False)
    from matplotlib.image import imsave

    imsave(ARTIFACTS / f"{name}.png", img)
    return img[..., :3].astype(int)


def shows_colour(img: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    target = (np.array(mcolors.to_rgb(hex_colour)) * 255).round().astype(int)
    return int(np.sum(np.all(np.abs(img - target) <= tol, axis=-1)))


# -- manifest, reader, writer ------------------------------------------------------------------------
def test_manifest_validates_with_imports():
    """What ``npe2 validate scnapse --imports`` checks, in this process (the CLI takes ~10 s)."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("scnapse")
    pm.validate_imports()  # every python_name imports and exists
    contrib = pm.contributions
    assert {w.display_name for w in contrib.widgets} == {
        "Cells", "Classic (PCA, t-SNE, UMAP)", "Autoencoder", "Cell classifier", "Image model", "Time course",
        "Pipeline", "Compare runs", "Map query", "Scatter view"}
    assert {s.key for s in contrib.sample_data} == {"pbmc68k", "pbmc160", "nuclei", "tracks"}
    assert contrib.readers[0].filename_patterns == ["*.h5ad"]
    assert contrib.writers[0].layer_types == ["points"]
    # every sample loads from sample_data/ (no download) into layers of the declared kinds
    from scnapse.napari import sample_pbmc68k, sample_pbmc160, sample_tracks

    assert sample_pbmc68k()[0][0].shape == (700, 2) and sample_pbmc160()[0][2] == "points"
    assert sample_tracks()[0][0].shape[1] == 5


def test_reader_makes_points_layer_of_embedding(h5ad_path, tmp_path, make_napari_viewer):
    assert napari_get_reader(str(tmp_path / "x.csv")) is None
    viewer = make_napari_viewer()
    layer = open_cells(viewer, h5ad_path)
    adata = get_adata(layer)
    np.testing.assert_allclose(layer.data[:, 1], adata.obsm["X_umap"][:, 0])
    np.testing.assert_allclose(layer.data[:, 0], -adata.obsm["X_umap"][:, 1])
    assert list(layer.features.columns) == list(adata.obs.columns)
    assert list(layer.features["cell_type"]) == list(adata.obs["cell_type"])
    rgba, legend = cell_colors(adata, "cell_type")
    np.testing.assert_allclose(layer.face_color, rgba)
    assert set(legend) == {"type0", "type1", "type2"} and len(set(legend.values())) == 3
    # the writer saves the AnnData carried by the layer, results included
    adata.obs["new"] = 1
    written = write_h5ad(str(tmp_path / "out.h5ad"), layer.data, {"metadata": layer.metadata})
    back = ad.read_h5ad(written[0])
    assert "new" in back.obs and back.obsm["X_umap"].shape == (120, 2)


def test_cells_widget_switches_embedding_and_colour(h5ad_path, make_napari_viewer):
    viewer = make_napari_viewer()
    layer = open_cells(viewer, h5ad_path)
    adata = get_adata(layer)
    adata.obsm["X_other"] = np.c_[np.arange(120.0), np.zeros(120), np.ones(120)]
    adata.obs["depth"] = np.asarray(adata.X.sum(1)).ravel()
    w = CellsWidget(viewer)
    w._on_cells()
    assert set(w.embedding.choices) == {"X_umap", "X_other"}
    w.embedding.value = "X_other"
    shown = w.cells.value
    np.testing.assert_allclose(shown.data, embedding_coords(adata, "X_other"))
    w.color_by.value = "depth"  # continuous: viridis, legend gives the range
    assert "depth" in w.legend.text()
    np.testing.assert_allclose(shown.face_color, cell_colors(adata, "depth")[0])


def test_cells_pickers_follow_a_renamed_layer(h5ad_path, make_napari_viewer):
    """A panel's result may turn a layer into an embedding's and rename it: the other panels'
    pickers show the new name and the new embedding (they listen to renames, not only to
    layers added or removed)."""
    viewer = make_napari_viewer()
    layer = open_cells(viewer, h5ad_path)
    cells, ae = CellsWidget(viewer), AutoencoderWidget(viewer)
    get_adata(layer).obsm["X_new"] = np.zeros((120, 2))
    layer.name = "cells (X_new)"
    assert cells.cells.native.currentText() == "cells (X_new)"
    assert ae.cells.native.currentText() == "cells (X_new)" and ae.cells.value is layer
    assert "X_new" in cells.embedding.choices


# -- the generated training panel -------------------------------------------------------------------
def test_train_options_generated_from_trainconfig(qtbot):
    opts = TrainOptions()
    names = set(TrainConfig.field_names()) - {"augment"}
    assert set(opts.field_names) == names | {"threads"}
    cost = opts.widget("cost")
    assert [c for c in cost.choices if c is not None] == list(literal_choices("cost"))
    assert None in cost.choices  # "auto": the step's natural cost
    assert list(opts.widget("activation").choices) == list(literal_choices("activation"))
    assert list(opts.widget("optimizer").choices) == list(literal_choices("optimizer"))
    assert list(opts.widget("device").choices) == ["auto", *available_devices()]
    # momentum only for the optimizers that use it
    for name in literal_choices("optimizer"):
        opts.widget("optimizer").value = name
        assert (not opts.widget("momentum").native.isHidden()) == (name in MOMENTUM_OPTIMIZERS)
        assert ("momentum" in opts.values()) == (name in MOMENTUM_OPTIMIZERS)
    # the learning rate shows and reads 1e-4 exactly (not a two-decimal spin box)
    opts.set_values(lr=1e-4, l2=1e-5)
    assert opts.widget("lr").value == "0.0001" and opts.values()["lr"] == 1e-4
    assert opts.values()["l2"] == 1e-5
    opts.widget("lr").value = "3e-3"
    assert opts.values()["lr"] == 3e-3
    opts.widget("lr").value = "fast"
    with pytest.raises(ValueError, match="learning rate"):
        opts.values()
    opts.widget("lr").value = "-1"
    with pytest.raises(ValueError, match="lr"):
        opts.values()  # TrainConfig's own check
    # a step's cost restriction
    ae = TrainOptions(costs=("mse", "nb"))
    assert [c for c in ae.widget("cost").choices if c is not None] == ["mse", "nb"]
    assert set(TrainOptions(exclude=()).values()) >= {"augment"}


# -- panels run to the end ---------------------------------------------------------------------------
def test_autoencoder_panel_trains_and_shows_embedding(h5ad_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)  # a shown window: the canvas renders for screenshots
    layer = open_cells(viewer, h5ad_path)
    panel = AutoencoderWidget(viewer)
    dock = viewer.window.add_dock_widget(panel, name="Autoencoder")
    assert panel.cells.value is layer
    panel.n_latent.value = 4
    panel.train_options.set_values(**FAST, lr=3e-3, seed=1)
    worker = panel.run()
    assert worker is not None and panel.run_button.text() == "Cancel"
    assert not panel.train_options.enabled and not panel.options.enabled
    wait_done(qtbot, panel)
    assert panel.last_error is None, panel.last_error
    adata = get_adata(layer)
    assert adata.obsm["X_autoencoder"].shape == (120, 4)
    result = panel.result_layer
    assert result.name.endswith("(X_autoencoder)") and result.metadata["adata"] is adata
    np.testing.assert_allclose(result.data, embedding_coords(adata, "X_autoencoder"))
    assert panel.loss_plot.epochs == [1, 2, 3] and all(np.isfinite(panel.loss_plot.val))
    assert panel.run_button.text() == "Train" and panel.train_options.enabled
    assert adata.uns["autoencoder"]["params"]["max_epochs"] == 3
    # the rendered result is not blank and shows the three cell-type colours
    viewer.window.remove_dock_widget(dock)  # the whole window for the canvas
    qtbot.wait(100)
    assert [x.visible for x in viewer.layers] == [False, True]  # the new embedding is shown alone
    viewer.reset_view(layers=[result])
    img = screenshot(viewer, "autoencoder_result")
    legend = result.metadata["scnapse_view"]["legend"]
    for colour in legend.values():
        assert shows_colour(img, colour) > 20, colour


def test_classic_then_autoencoder_pipeline_reproduces_gui(h5ad_path, tmp_path, make_napari_viewer, qtbot,
                                                         monkeypatch):
    viewer = make_napari_viewer(show=True)
    layer = open_cells(viewer, h5ad_path)
    classic = ClassicWidget(viewer)
    assert classic.normalize.value  # raw counts are detected
    classic.n_comps.value = 10
    # what t-SNE and UMAP would run (not run here: seconds each on a busy 2-core machine)
    adata = get_adata(layer)
    classic.method.value = "tsne"
    classic.perplexity.value = 10.0
    assert [(c.name, c.params.get("perplexity")) for c in classic.calls(adata)][-1] == ("scanpy.tl.tsne", 10.0)
    classic.perplexity.value = 50.0
    with pytest.raises(ValueError, match="perplexity"):
        classic.calls(adata)
    classic.method.value = "umap"
    assert [c.name for c in classic.calls(adata)][-2:] == ["scanpy.pp.neighbors", "scanpy.tl.umap"]
    classic.method.value = "pca"
    classic.run()
    wait_done(qtbot, classic)
    assert classic.last_error is None, classic.last_error
    assert "log1p" in adata.uns and adata.obsm["X_pca"].shape == (120, 10)
    np.testing.assert_allclose(classic.result_layer.data, embedding_coords(adata, "X_pca"))
    img = screenshot(viewer, "classic_pca")
    for colour in classic.result_layer.metadata["scnapse_view"]["legend"].values():
        assert shows_colour(img, colour) > 20, colour  # each cell type seen in its colour
    assert classic.calls(adata)[0].name == "scanpy.pp.pca"  # counts are normalised only once

    ae = AutoencoderWidget(viewer)
    ae.cells.value = layer
    ae.n_latent.value = 3
    ae.hidden.value = "16"
    assert ae.pca_init.value is True  # the step's default
    ae.pca_init.value = False
    assert ae.variational.value is None  # the step's variational=None, shown as "auto"
    ae.variational.value = False  # "autoencoder"
    ae.train_options.set_values(**FAST, optimizer="momentum", lr=1e-2, l2=1e-4, activation="tanh", seed=3)
    ae.run()
    wait_done(qtbot, ae)
    assert ae.last_error is None, ae.last_error

    files = ae.save_pipeline(tmp_path / "session.yaml")
    assert files == [str(tmp_path / "session.yaml"), str(tmp_path / "session.py")]
    pipe = Pipeline.from_yaml(files[0])
    assert [s.name for s in pipe.steps] == ["scanpy.pp.normalize_total", "scanpy.pp.log1p", "scanpy.pp.pca",
                                            "scnapse.tl.autoencoder"]
    assert pipe.input == str(h5ad_path)
    assert pipe.steps[-1].params["optimizer"] == "momentum" and pipe.steps[-1].params["lr"] == 1e-2
    assert pipe.steps[-1].params["pca_init"] is False and pipe.steps[-1].params["variational"] is False
    again = pipe.run(write=False)
    for key in ("X_pca", "X_autoencoder"):
        np.testing.assert_allclose(again.obsm[key], adata.obsm[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert "scnapse.tl.autoencoder(adata" in Path(files[1]).read_text()


def test_cancel_keeps_best_model_and_panel_usable(h5ad_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = open_cells(viewer, h5ad_path)
    panel = AutoencoderWidget(viewer)
    panel.train_options.set_values(max_epochs=2000, early_stopping=0, batch_size=16)
    panel._relay.report.connect(lambda r: panel.cancel() if r.epoch >= 2 else None)
    panel.run()
    wait_done(qtbot, panel)
    adata = get_adata(layer)
    history = adata.uns["autoencoder"]["history"]
    assert 2 <= len(history["epoch"]) < 2000
    recorded = layer.metadata["scnapse_session"].steps[-1]["params"]
    assert recorded["max_epochs"] == panel.loss_plot.epochs[-1]
    assert "cancelled" in panel.status.text()
    assert panel.run_button.text() == "Train" and panel.run_button.isEnabled() and panel.options.enabled
    panel.train_options.set_values(max_epochs=1)
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is None and panel.loss_plot.epochs == [1]


def test_bad_input_shows_notification_and_panel_recovers(h5ad_path, make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    panel = AutoencoderWidget(viewer)
    assert panel.run() is None  # no cells yet
    assert "open an .h5ad" in notifications[-1].message.lower()
    layer = open_cells(viewer, h5ad_path)
    panel.cells.value = layer
    panel.hidden.value = "12x"
    assert panel.run() is None
    assert "hidden layers" in notifications[-1].message
    panel.hidden.value = "8"
    panel.train_options.widget("lr").value = "1e-3"
    panel.train_options.widget("dropout").value = 0.5
    # an error inside the core (in the worker thread) arrives with the core's message
    adata = get_adata(layer)
    adata.X = adata.X.toarray()
    adata.X[0, 0] = np.nan
    panel.train_options.set_values(**FAST)
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is not None and "NaN" in panel.last_error
    assert any("NaN" in n.message for n in notifications)
    assert panel.run_button.text() == "Train" and panel.run_button.isEnabled()
    assert layer.metadata["scnapse_session"].steps == []  # nothing recorded for a failed step


def test_cell_classifier_panel_annotates_and_exports(h5ad_path, tmp_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    layer = open_cells(viewer, h5ad_path)
    panel = CellClassifierWidget(viewer)
    assert [c for c in panel.labels_key.choices if c] == ["cell_type"]
    assert [c for c in panel.train_options.widget("cost").choices if c is not None] == ["cross_entropy"]
    panel.labels_key.value = "cell_type"
    panel.hidden.value = "32"
    panel.train_options.set_values(max_epochs=15, early_stopping=0, seed=2)
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is None, panel.last_error
    adata = get_adata(layer)
    predicted = adata.obs["predicted"].astype(str).to_numpy()
    assert np.mean(predicted == adata.obs["cell_type"].astype(str).to_numpy()) > 0.8
    assert adata.obs["predicted_confidence"].between(0, 1).all()
    np.testing.assert_allclose(layer.face_color, cell_colors(adata, "predicted")[0])
    assert "held-out accuracy" in panel.status.text()
    img = screenshot(viewer, "classifier_result")
    for label, colour in layer.metadata["scnapse_view"]["legend"].items():
        if np.sum(predicted == label) >= 5:  # every class with cells is seen in its colour
            assert shows_colour(img, colour) > 20, (label, colour)

    # the exported pipeline re-trains the classifier and re-creates the annotation
    files = panel.save_pipeline(tmp_path / "annotate.yaml")
    pipe = Pipeline.from_yaml(files[0])
    assert [s.name for s in pipe.steps] == ["scnapse.tl.train_classifier", "scnapse.tl.annotate"]
    assert pipe.steps[1].params["model"] == pipe.steps[0].id
    model_dir = tmp_path / "classifier_model"
    panel.results["classifier"].save(model_dir)
    again = pipe.run(write=False)
    assert list(again.obs["predicted"].astype(str)) == list(predicted)
    np.testing.assert_allclose(again.obs["predicted_confidence"], adata.obs["predicted_confidence"], rtol=1e-5)

    # a saved model annotates without training
    panel.mode.value = "load a saved model"
    assert panel.run_button.text() == "Annotate" and not panel.train_options.visible
    panel.model_path.value = str(model_dir)
    panel.key_added.value = "reloaded"
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is None, panel.last_error
    assert list(adata.obs["reloaded"].astype(str)) == list(predicted)


def test_image_panel_classifies_clicked_cells_and_embeds(tmp_path, make_napari_viewer, qtbot):
    from scnapse.im import sample_image
    from scnapse.napari import ImageModelWidget, sample_nuclei

    image, labels = (a[:160, :160] for a in sample_image("dsb2018"))
    assert [t[2] for t in sample_nuclei()] == ["image", "labels"]
    viewer = make_napari_viewer(show=True)
    img_layer = viewer.add_image(image, name="nuclei")
    lab = viewer.add_labels(labels, name="nuclei labels")
    panel = ImageModelWidget(viewer)
    assert panel.image_layer.value is img_layer and panel.labels_layer.value is lab
    # too few annotations: a clear notification, nothing runs
    assert panel.run() is None and "at least two classes" in panel.last_error
    # click 3 large and 3 small nuclei, each with its class
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    order = ids[np.argsort(areas)]
    ann = panel.annotation_layer()
    for cls, chosen in (("small", order[:3]), ("large", order[-3:])):
        panel.class_name.value = cls
        for i in chosen:
            pix = np.argwhere(labels == i)
            ann.add(pix[len(pix) // 2].astype(float))
    assert panel.annotations(labels) == {**{int(i): "small" for i in order[:3]}, **{int(i): "large" for i in order[-3:]}}
    # each click drawn in its class's colour, with a legend
    clicked = ann.metadata["scnapse_view"]["legend"]
    assert set(clicked) == {"small", "large"} and clicked["small"] != clicked["large"]
    np.testing.assert_allclose(ann.face_color[:3, :3], [mcolors.to_rgb(clicked["small"])] * 3)
    assert set(panel.legend.legend) == {"small", "large"}
    # crops larger than the image: the core's message, from the worker thread, as a notification
    panel.size.value = 400
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is not None and "size" in panel.last_error and "adata" not in lab.metadata
    panel.size.value = 24
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=32, seed=0)
    panel.run()
    wait_done(qtbot, panel, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    cells = lab.metadata["adata"]
    assert cells.n_obs == len(ids) and cells.obs["predicted_class"].notna().all()
    assert set(cells.obs["predicted_class"].astype(str)) <= {"small", "large"}
    colours = lab.metadata["scnapse_view"]["legend"]
    first = cells.obs.iloc[0]
    np.testing.assert_allclose(lab.colormap.map(int(first["label"]))[..., :3].ravel(),
                               mcolors.to_rgb(colours[str(first["predicted_class"])]), atol=1e-3)
    assert set(lab.features["label"]) == set(ids) and "class" in lab.features
    img_layer.visible = False
    ann.visible = False
    lab.opacity = 1.0
    viewer.reset_view()
    shot = screenshot(viewer, "image_classes")
    for cls in set(cells.obs["predicted_class"].astype(str)):
        assert shows_colour(shot, colours[cls]) > 50, cls
        assert colours[cls] == clicked[cls]  # a predicted class has the colour of its clicks
    assert "predicted_class" in panel.legend.text() and "small" in panel.legend.text()

    # embed every cell with the CNN autoencoder; export and re-run the pipeline
    panel.mode.value = "embed (CNN autoencoder)"
    assert panel.run_button.text() == "Embed"
    panel.n_latent.value = 4
    panel.train_options.set_values(cost="mse", max_epochs=2)
    panel.run()
    wait_done(qtbot, panel, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    assert cells.obsm["X_cnn"].shape == (len(ids), 4)
    # shown in the scatter view (not as points over the image), linked to the Labels layer
    assert panel.result_layer is lab and panel.scatter.embedding.value == "X_cnn"
    np.testing.assert_allclose(panel.scatter.xy, cells.obsm["X_cnn"][:, :2])
    files = panel.save_pipeline(tmp_path / "image.yaml")
    pipe = Pipeline.from_yaml(files[0])
    assert [s.name for s in pipe.steps] == ["scnapse.im.mark_classes", "scnapse.tl.train_image_classifier",
                                            "scnapse.tl.annotate_images", "scnapse.tl.image_embedding"]
    again = pipe.run(write=False)
    np.testing.assert_allclose(again.obsm["X_cnn"], cells.obsm["X_cnn"], rtol=1e-4, atol=1e-5)


def test_time_course_panel_embeds_and_forecasts_tracks(tmp_path, make_napari_viewer, qtbot):
    from scnapse.napari import TimeCourseWidget, sample_tracks

    viewer = make_napari_viewer(show=True)
    data, kwargs, kind = sample_tracks()[0]
    tracks = viewer.add_tracks(data, **kwargs)
    panel = TimeCourseWidget(viewer)
    assert panel.tracks.value is tracks
    panel.hidden.value = 8
    panel.n_latent.value = 3
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=64, seed=0)
    panel.run()
    wait_done(qtbot, panel, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    seqs = tracks.metadata["adata"]
    n_tracks = len(np.unique(data[:, 0]))
    assert seqs.obsm["X_rnn"].shape == (n_tracks, 3)
    assert panel.result_layer is tracks and panel.scatter.source.value is tracks
    np.testing.assert_allclose(panel.scatter.xy, seqs.obsm["X_rnn"][:, :2])

    panel.task.value = "forecast"
    panel.horizon.value = 2
    panel.run()
    wait_done(qtbot, panel, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    fc = viewer.layers["tgmm tracks forecast"]
    assert fc.data.shape == (n_tracks * 2 * 3, 4)  # 2 steps, drawn from the track's end to its last forecast frame
    # the forecast points sit after each track's last frame, near its last position
    first = seqs.obs.iloc[0]
    rows = fc.data[fc.features["track_id"].to_numpy() == first["track_id"]]
    assert list(fc.features["frame"][fc.features["track_id"] == first["track_id"]][:2]) == [first["end"] + 1,
                                                                                          first["end"] + 2]
    assert sorted(set(rows[:, 0])) == [first["end"], first["end"] + 1, first["end"] + 2]

    files = panel.save_pipeline(tmp_path / "tracks.yaml")
    pipe = Pipeline.from_yaml(files[0])
    assert [s.name for s in pipe.steps] == ["scnapse.tl.sequence_embedding", "scnapse.tl.train_forecaster",
                                            "scnapse.tl.forecast"]
    again = pipe.run(write=False)
    np.testing.assert_allclose(again.obsm["X_rnn"], seqs.obsm["X_rnn"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(again.obsm["forecast"], seqs.obsm["forecast"], rtol=1e-4, atol=1e-4)


def test_time_course_panel_classifies_tracks_and_colours_them(make_napari_viewer, qtbot):
    import pandas as pd

    from scnapse.napari import TimeCourseWidget, sample_tracks

    viewer = make_napari_viewer()
    data, kwargs, _ = sample_tracks()[0]
    fate = np.where(data[:, 0] % 2 == 0, "even", "odd")
    kwargs["features"] = pd.DataFrame({"fate": fate, "divides": kwargs["features"]["divides"]})
    tracks = viewer.add_tracks(data, **kwargs)
    panel = TimeCourseWidget(viewer)
    panel.task.value = "classify"
    assert "fate" in panel.labels_key.choices  # per-track columns of the layer's features
    panel.labels_key.value = "fate"
    panel.hidden.value = 8
    panel.train_options.set_values(max_epochs=2, early_stopping=0, seed=0)
    panel.run()
    wait_done(qtbot, panel, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    seqs = tracks.metadata["adata"]
    assert set(seqs.obs["predicted"].astype(str)) <= {"even", "odd"}
    assert tracks.color_by == "predicted"
    # each vertex carries its track's predicted class (as a position on the classes' colormap)
    k = len(seqs.obs["predicted"].cat.categories)
    codes = dict(zip(seqs.obs["track_id"], (seqs.obs["predicted"].cat.codes + 0.5) / k))
    np.testing.assert_allclose(tracks.properties["predicted"], [codes[t] for t in tracks.data[:, 0]])
    # drawn in the legend's colour of its class
    legend = panel.legend.legend
    assert set(legend) == {str(c) for c in seqs.obs["predicted"].cat.categories}
    cls = dict(zip(seqs.obs["track_id"], seqs.obs["predicted"].astype(str)))
    expected = np.array([mcolors.to_rgb(legend[cls[t]]) for t in tracks._manager.data[:, 0]])
    np.testing.assert_allclose(tracks.track_colors[:, :3], expected, atol=1e-3)
    # and the layer's other features stay with their vertices
    np.testing.assert_array_equal(tracks.features["fate"], np.where(tracks.data[:, 0] % 2 == 0, "even", "odd"))


def test_sample_without_embedding_gets_one_from_classic_panel(make_napari_viewer, qtbot):
    from scnapse.napari import sample_pbmc160

    viewer = make_napari_viewer()
    data, kwargs, kind = sample_pbmc160()[0]
    layer = viewer.add_points(data, **kwargs)
    assert layer.name == "pbmc160 (no embedding)" and layer.metadata["scnapse_session"].input == {"dataset": "pbmc160"}
    panel = ClassicWidget(viewer)
    panel.method.value = "pca"
    panel.n_comps.value = 5
    panel.run()
    wait_done(qtbot, panel)
    assert panel.last_error is None, panel.last_error
    assert len(viewer.layers) == 1 and panel.result_layer is layer  # the grid placeholder now shows PCA
    adata = get_adata(layer)
    np.testing.assert_allclose(layer.data, embedding_coords(adata, "X_pca"))
    assert layer.name == "pbmc160 (X_pca)"
    np.testing.assert_allclose(layer.face_color, cell_colors(adata, "cell_type")[0])
