"""The Pipeline panel: moving steps where the order allows, and a pipeline file opened through the
reader run on the selected cells layer when they hold what its steps need."""

from __future__ import annotations

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402

from scnapse.cli import main  # noqa: E402
from scnapse.napari._io import sample_pbmc68k  # noqa: E402
from scnapse.napari._pipeline_panel import PipelineWidget, missing_inputs  # noqa: E402
from scnapse.pipeline.session import Session, dependency  # noqa: E402

pytestmark = pytest.mark.napari


def _cells(viewer):
    data, kwargs, _ = sample_pbmc68k()[0]
    return viewer.add_points(data, **kwargs)


def test_dependencies_of_recorded_steps():
    s = Session(input={"dataset": "pbmc68k"})
    s.record("scanpy.pp.pca", {"n_comps": 10})
    s.record("scanpy.pp.neighbors", {"use_rep": "X_pca"})
    s.record("scanpy.tl.umap", {})
    s.record("scanpy.tl.leiden", {"key_added": "clusters"})
    s.record("scnapse.tl.integration_metrics", {"keys": ["X_pca"], "labels_key": "clusters", "batch_key": "b"})
    pca, nn, umap, leiden, metrics = s.steps
    assert "X_pca" in dependency(pca, nn) and "'pca'" in dependency(pca, nn)
    assert "neighbors" in dependency(nn, umap) and dependency(umap, leiden) is None
    assert "clusters" in dependency(leiden, metrics)
    s.move(3, 2)  # leiden before umap: both read the graph only
    assert [x["id"] for x in s.steps] == ["pca", "neighbors", "leiden", "umap", "integration_metrics"]
    with pytest.raises(ValueError, match="Cannot move step 'neighbors' up: step 'neighbors'.*needs 'X_pca'"):
        s.move(1, 0)
    with pytest.raises(ValueError, match="Cannot move step 'leiden' down.*integration_metrics"):
        s.move(2, 4)
    assert [x["id"] for x in s.steps] == ["pca", "neighbors", "leiden", "umap", "integration_metrics"]


def test_move_up_and_down_in_the_panel(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _cells(viewer)
    session = layer.metadata["scnapse_session"]
    session.record("scanpy.pp.log1p", {})
    session.record("scanpy.pp.pca", {"n_comps": 10})
    session.record("scanpy.pp.neighbors", {"use_rep": "X_pca"})
    session.record("scanpy.tl.umap", {})
    panel = PipelineWidget(viewer)
    panel.cells.value = layer
    panel.select(2)
    panel.up_button.click()  # neighbours need PCA's output: refused, nothing changes
    assert "Cannot move step 'neighbors' up" in panel.last_error and "X_pca" in panel.last_error
    assert [s["id"] for s in session.steps] == ["log1p", "pca", "neighbors", "umap"]
    panel.select(0)
    panel.down_button.click()  # log1p after PCA: PCA does not read what log1p writes
    assert [s["id"] for s in session.steps] == ["pca", "log1p", "neighbors", "umap"]
    assert panel.steps.currentRow() == 1
    assert "changed since" in panel.steps.item(0).text()
    panel.undo_button.click()
    assert [s["id"] for s in session.steps] == ["log1p", "pca", "neighbors", "umap"]
    panel.select(3)
    panel.down_button.click()
    assert "already the last" in panel.last_error


def test_pipeline_file_runs_on_the_selected_cells_when_compatible(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    layer = _cells(viewer)
    layer.metadata["scnapse_session"].record("scanpy.pp.normalize_total", {"target_sum": 10000})
    import scanpy as sc

    sc.pp.normalize_total(layer.metadata["adata"], target_sum=10000)
    good = tmp_path / "more.yaml"
    good.write_text("input: {dataset: pbmc68k}\nsteps:\n  - scanpy.pp.log1p\n"
                    "  - scanpy.pp.pca: {n_comps: 8}\n  - scanpy.pp.neighbors: {use_rep: X_pca, n_neighbors: 10}\n")
    panel = PipelineWidget(viewer)
    panel.cells.value = layer
    viewer.open(str(good), plugin="scnapse")
    assert panel.file_session is not None and panel.steps.count() == 3
    n_layers = len(viewer.layers)
    assert panel.run_from(0) is not None
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    assert len(viewer.layers) == n_layers  # ran on the selected cells, no new cells layer
    result = layer.metadata["adata"]
    assert result.obsm["X_pca"].shape == (700, 8) and "connectivities" in result.obsp
    session = layer.metadata["scnapse_session"]
    assert [s["step"] for s in session.steps] == ["scanpy.pp.normalize_total", "scanpy.pp.log1p", "scanpy.pp.pca",
                                                  "scanpy.pp.neighbors"]
    assert panel.file_session is None and panel.steps.count() == 4
    path = tmp_path / "session.yaml"
    path.write_text(session.to_pipeline(output=str(tmp_path / "out.h5ad")).to_yaml())
    assert main(["run", str(path)]) == 0  # the cells' steps and the file's, re-run: the same numbers
    ref = ad.read_h5ad(tmp_path / "out.h5ad")
    assert np.array_equal(result.obsm["X_pca"], ref.obsm["X_pca"])

    # a file whose steps need what the cells lack runs on its own input (a new cells layer)
    other = tmp_path / "umap.yaml"
    other.write_text("input: {dataset: pbmc68k}\nsteps:\n  - scanpy.tl.leiden: {neighbors_key: graph2}\n")
    viewer.open(str(other), plugin="scnapse")
    assert missing_inputs(panel.file_session, result) == ["graph2"]
