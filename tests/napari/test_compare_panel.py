"""Compare runs, batch pickers and query mapping from napari (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import scnapse as sn  # noqa: E402
from scnapse.napari._compare_panel import CompareRunsWidget, parse_fixed, parse_list  # noqa: E402
from scnapse.napari._io import sample_pbmc68k  # noqa: E402
from scnapse.napari._layers import adata_layer_data  # noqa: E402

pytestmark = pytest.mark.napari
OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam"]
FIXED = {"max_epochs": 2, "n_latent": 4, "hidden": [16], "pca_init": False}


def test_four_optimizers_from_the_panel_equal_the_api_runs(make_napari_viewer, qtbot):
    from matplotlib.lines import Line2D

    viewer = make_napari_viewer()
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    original = layer.metadata["adata"].copy()
    panel = CompareRunsWidget(viewer)
    panel.cells.value = layer
    assert panel.values.value == "sgd, momentum, rmsprop, adam"
    panel.fixed.value = "n_latent: 4, hidden: [16], pca_init: false"
    panel.max_epochs.value = 2
    panel.labels_key.value = "bulk_labels"
    panel.seed.value = 3
    assert panel.run() is not None
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    adata = layer.metadata["adata"]
    table = adata.uns["compare_runs"]["table"]
    # one plot, four validation curves (solid) and four train curves (dashed), a legend naming the runs
    ax = panel.figure.axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert len(solid) == 4 and len(dashed) == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:4] == [f"optimizer={o}" for o in OPTIMIZERS]
    assert all(isinstance(h, Line2D) for h in ax.get_legend().legend_handles)
    # the table of the panel: one row per run, the record's numbers
    assert panel.table.rowCount() == 4
    head = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())]
    assert head[0] == "final_val_loss" and "knn_accuracy" in head
    assert [panel.table.verticalHeaderItem(r).text() for r in range(4)] == [f"optimizer={o}" for o in OPTIMIZERS]
    for r, opt in enumerate(OPTIMIZERS):
        alone = original.copy()
        sn.tl.autoencoder(alone, optimizer=opt, seed=3, progress=False, **FIXED)
        hist = alone.uns["autoencoder"]["history"]
        # the same run (float32 rounding of the worker thread's BLAS aside)
        assert table.loc[f"optimizer={opt}", "final_val_loss"] == pytest.approx(hist["val_loss"][-1], rel=1e-6)
        assert float(panel.table.item(r, 0).text()) == pytest.approx(hist["val_loss"][-1], rel=1e-3)
        assert np.allclose(adata.obsm[f"X_autoencoder_optimizer={opt}"], alone.obsm["X_autoencoder"], atol=1e-5)
    assert len(set(table["final_val_loss"])) == 4
    # the embeddings next to each other: one layer per run, side by side
    assert len(panel.embedding_layers) == 4
    lefts = [lyr.translate[1] + lyr.scale[1] * np.asarray(lyr.data)[:, 1].min() for lyr in panel.embedding_layers]
    assert all(b > a for a, b in zip(lefts[:-1], lefts[1:], strict=True))
    assert all(lyr.visible for lyr in panel.embedding_layers)
    # recorded in the session like any step
    session = layer.metadata["scnapse_session"]
    assert session.steps[-1]["step"] == "scnapse.tl.compare_runs"
    assert session.steps[-1]["params"]["vary"] == {"optimizer": OPTIMIZERS}


def test_values_and_fixed_fields_and_bad_input(make_napari_viewer, qtbot):
    assert parse_list("sgd, adam") == ["sgd", "adam"]
    assert parse_list("1e-3, 0.01") == [1e-3, 0.01]
    assert parse_list("log:1e-4..1e-1:4") == "log:1e-4..1e-1:4"
    assert parse_fixed("n_latent: 8, pca_init: false") == {"n_latent": 8, "pca_init": False}
    with pytest.raises(ValueError, match="two or more"):
        parse_list("adam")
    with pytest.raises(ValueError, match="fixed options"):
        parse_fixed("n_latent")
    viewer = make_napari_viewer()
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    panel = CompareRunsWidget(viewer)
    panel.cells.value = layer
    panel.vary.value = "lr"
    assert panel.values.value.startswith("log:")
    panel.step.value = "cell classifier"
    panel.labels_key.value = None
    assert panel.run() is None and "labels" in panel.last_error
    panel.vary.value = "other…"
    panel.other.value = "optimiser"
    panel.labels_key.value = "bulk_labels"
    panel.values.value = "a, b"
    panel.max_epochs.value = 1
    assert panel.run() is not None
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "valid names" in panel.last_error  # the step's own check, in the panel


def test_compare_runs_recorded_for_the_cells(make_napari_viewer, qtbot):
    from scnapse.napari._compare_panel import vary_from_steps

    viewer = make_napari_viewer()
    data, kwargs, _ = sample_pbmc68k()[0]
    layer = viewer.add_points(data, **kwargs)
    session = layer.metadata["scnapse_session"]
    for opt in ("sgd", "adam"):
        session.record("scnapse.tl.autoencoder", {**FIXED, "optimizer": opt, "seed": 2})
    session.record("scanpy.pp.neighbors", {"use_rep": "X_autoencoder"})
    panel = CompareRunsWidget(viewer)
    panel.cells.value = layer
    assert panel.recorded_runs() == ["autoencoder", "autoencoder_2"] and panel.runs.count() == 2
    for i in range(2):
        panel.runs.item(i).setSelected(True)
    panel.compare_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    table = layer.metadata["adata"].uns["compare_runs"]["table"]
    assert list(table.index) == ["optimizer=sgd", "optimizer=adam"] and panel.table.rowCount() == 2
    rec = session.steps[-1]["params"]
    assert rec["vary"] == {"optimizer": ["sgd", "adam"]} and rec["seed"] == 2 and rec["fixed"]["n_latent"] == 4
    with pytest.raises(ValueError, match="several options"):
        vary_from_steps([{"step": "scnapse.tl.autoencoder", "id": "a", "params": {"lr": 0.1, "l2": 0}},
                         {"step": "scnapse.tl.autoencoder", "id": "b", "params": {"lr": 0.2, "l2": 1}}])
    assert panel.compare_recorded(["autoencoder"]) is None and "two or more" in panel.last_error


def _batches():
    a = sn.datasets.simulated_batches(240, n_genes=60, n_batches=3, n_cell_types=3, seed=0)
    a.obs["batch"] = a.obs["batch"].astype("category")
    return a


def test_batch_pickers_colour_by_batch_and_map_query(make_napari_viewer, qtbot, tmp_path):
    from scnapse.napari._cells import CellsWidget
    from scnapse.napari._map_query_panel import SAVED, MapQueryWidget
    from scnapse.napari._widgets import AutoencoderWidget, CellClassifierWidget

    full = _batches()
    ref = full[full.obs["batch"] != "batch2"].copy()
    query = full[full.obs["batch"] == "batch2"].copy()
    viewer = make_napari_viewer()
    data, kwargs, _ = adata_layer_data(ref, name="reference")
    ref_layer = viewer.add_points(data, **kwargs)
    data, kwargs, _ = adata_layer_data(query, name="query")
    query_layer = viewer.add_points(data, **kwargs)

    # the Autoencoder panel: a batch picker of the categorical columns, "none" by default
    ae = AutoencoderWidget(viewer)
    ae.cells.value = ref_layer
    picker = ae.step_options()[0].widget("batch_key")
    assert picker.value is None and None in picker.choices and "batch" in picker.choices
    picker.value = "batch"
    ae.n_latent.value = 4
    ae.hidden.value = "16"
    ae.train_options.widget("max_epochs").value = 3
    assert ae.run() is not None
    qtbot.waitUntil(lambda: not ae.running, timeout=120_000)
    assert ae.last_error is None, ae.last_error
    rec = ref_layer.metadata["adata"].uns["autoencoder"]["params"]
    assert rec["batch_key"] == "batch" and list(rec["batches"]) == ["batch0", "batch1"]
    assert ref_layer.metadata["scnapse_session"].steps[-1]["params"]["batch_key"] == "batch"

    # the Cells panel colours by batch
    cells = CellsWidget(viewer)
    cells.cells.value = query_layer
    cells.color_by.value = "batch"
    assert "batch2" in cells.legend.text()

    # the Cell classifier panel picks a batch column for training
    clf = CellClassifierWidget(viewer)
    clf.cells.value = ref_layer
    train_opts = clf.step_options()[0]
    assert "batch" in train_opts.widget("batch_key").choices

    # map_query on the second cells layer with a saved reference
    model = sn.models.Autoencoder(4, hidden=(16,), batch_key="batch", max_epochs=3, seed=0).fit(ref, progress=False)
    model.save(tmp_path / "ref_ae")
    mq = MapQueryWidget(viewer)
    mq.cells.value = query_layer
    assert mq.source.value == SAVED
    assert mq.run() is None and "model folder" in mq.last_error
    mq.model_path.value = tmp_path / "ref_ae"
    # the step's defaults: passes chosen by the query's size ("auto"), new batches start at the mean
    defaults = mq.opts.values()
    assert defaults["max_epochs"] is None and defaults["init"] == "mean", defaults
    assert list(mq.opts.widget("init").choices) == ["mean", "zeros"]
    mq.opts.widget("max_epochs").value = 5
    assert mq.run() is not None
    qtbot.waitUntil(lambda: not mq.running, timeout=120_000)
    assert mq.last_error is None, mq.last_error
    mapped = query_layer.metadata["adata"].obsm["X_autoencoder"]
    expect = query.copy()
    sn.tl.map_query(expect, sn.models.Autoencoder.load(tmp_path / "ref_ae"), max_epochs=5)
    assert np.array_equal(mapped, expect.obsm["X_autoencoder"])
    session = query_layer.metadata["scnapse_session"]
    assert session.steps[-1]["step"] == "scnapse.tl.map_query"
    assert session.steps[-1]["params"]["model"] == str((tmp_path / "ref_ae").resolve())
    assert any(lyr.name == "query (X_autoencoder)" for lyr in viewer.layers)

    # the mapped model is kept in the session: a third layer can be mapped with it
    third = full[full.obs["batch"] == "batch2"].copy()
    data, kwargs, _ = adata_layer_data(third, name="third")
    third_layer = viewer.add_points(data, **kwargs)
    mq.cells.value = third_layer
    mq.source.reset_choices()
    labels = [mq.source.native.itemText(i) for i in range(mq.source.native.count())]
    session_choice = [c for c in mq.source.choices if c != SAVED]
    assert any("mapped_autoencoder" in str(lbl) for lbl in labels), labels
    mq.source.value = session_choice[0]
    assert mq.run() is not None
    qtbot.waitUntil(lambda: not mq.running, timeout=120_000)
    assert mq.last_error is None, mq.last_error
    third_session = third_layer.metadata["scnapse_session"]
    assert third_session.steps[-1]["step"] == "scnapse.tl.map_query"
    written = third_session.to_pipeline(model_dir=tmp_path / "models").steps[-1].params["model"]
    assert (tmp_path / "models").exists() and str(written).startswith(str(tmp_path / "models"))
