"""The Pipeline panel under Xvfb: recorded steps, edit the middle one, re-run from it (equal to
``scnapse run`` of the edited file), cancel mid-pipeline, a failing pipeline's message, and a
pipeline file opened through napari's reader and run with its layers appearing."""

from __future__ import annotations

from pathlib import Path

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402

from scnapse.cli import main  # noqa: E402
from scnapse.napari._io import sample_pbmc68k  # noqa: E402
from scnapse.napari._pipeline_panel import PipelineWidget  # noqa: E402

pytestmark = pytest.mark.napari
ROOT = Path(__file__).resolve().parents[2]


def _cells(viewer):
    data, kwargs, _ = sample_pbmc68k()[0]
    return viewer.add_points(data, **kwargs)


def _record_three(layer):
    session = layer.metadata["scnapse_session"]
    session.record("scanpy.pp.log1p", {})
    session.record("scnapse.tl.autoencoder", {"n_latent": 4, "max_epochs": 2, "hidden": [16]})
    session.record("scanpy.pp.neighbors", {"use_rep": "X_autoencoder", "n_neighbors": 10})
    return session


def test_edit_middle_step_rerun_equals_scnapse_run(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    layer = _cells(viewer)
    session = _record_three(layer)
    panel = PipelineWidget(viewer)
    panel.cells.value = layer
    assert panel.steps.count() == 3 and "autoencoder" in panel.steps.item(1).text()
    panel.select(1)
    panel.widget("n_latent").value = 6
    params = panel.apply_edit()
    assert params["n_latent"] == 6 and session.steps[1]["params"]["n_latent"] == 6
    assert "changed since" in panel.steps.item(1).text() and "changed since" in panel.steps.item(2).text()
    assert panel.run_from(1) is not None
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    assert "took" in panel.steps.item(1).text()
    result = layer.metadata["adata"]
    assert result.obsm["X_autoencoder"].shape == (700, 6)
    assert any(lyr.name.endswith("(X_autoencoder)") for lyr in viewer.layers)
    path = tmp_path / "edited.yaml"
    path.write_text(session.to_pipeline(output=str(tmp_path / "out.h5ad")).to_yaml())
    assert main(["run", str(path)]) == 0
    ref = ad.read_h5ad(tmp_path / "out.h5ad")
    assert np.array_equal(result.obsm["X_autoencoder"], ref.obsm["X_autoencoder"])
    assert np.array_equal(result.obsp["connectivities"].toarray(), ref.obsp["connectivities"].toarray())
    panel.undo()
    assert session.steps[1]["params"]["n_latent"] == 4


def test_cancel_mid_pipeline_and_a_failing_step(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = _cells(viewer)
    session = _record_three(layer)
    session.steps[1]["params"]["max_epochs"] = 200
    before = layer.metadata["adata"]
    panel = PipelineWidget(viewer)
    panel.cells.value = layer
    panel._relay.report.connect(lambda r: panel.cancel() if r.epoch >= 2 else None)
    panel.run_from(0)
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert "cancelled" in panel.status.text()
    assert "cancelled" in panel.steps.item(1).text() and "cancelled" not in panel.steps.item(2).text()
    assert layer.metadata["adata"] is before  # nothing replaced
    session.set_params(1, {"n_latent": 4, "optimiser": "adam"})
    assert panel.run_from(0) is None  # refused before anything runs
    assert "step 2 (autoencoder)" in panel.last_error and "optimiser" in panel.last_error


@pytest.mark.slow  # the whole bundled demo (UMAP, Leiden, comparison): about a minute
def test_open_pipeline_file_with_the_reader_and_run(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    spec = yaml.safe_load((ROOT / "sample_data" / "pbmc_autoencoder.yaml").read_text())
    for step in spec["steps"]:  # the bundled file, with a short training
        if isinstance(step, dict) and step.get("step") == "scnapse.tl.autoencoder":
            step["params"] = {"max_epochs": 2}
    short = tmp_path / "pbmc_autoencoder.yaml"
    short.write_text(yaml.safe_dump(spec, sort_keys=False))
    viewer = make_napari_viewer()
    viewer.open(str(ROOT / "sample_data" / "pbmc_autoencoder.yaml"), plugin="scnapse")
    from scnapse.napari._pipeline_panel import _PANELS, _key

    panel = _PANELS[_key(viewer)]
    assert panel.steps.count() == 11 and len(viewer.layers) == 0
    viewer.open(str(short), plugin="scnapse")
    assert panel.steps.count() == 11
    panel.run_from(0)
    qtbot.waitUntil(lambda: not panel.running, timeout=240_000)
    assert panel.last_error is None, panel.last_error
    names = [lyr.name for lyr in viewer.layers]
    assert any(n.endswith("(X_autoencoder)") for n in names), names
    assert viewer.layers[0].metadata["adata"].obsm["X_umap"].shape == (700, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {dataset: pbmc68k}\nsteps:\n  - scnapse.tl.autoencoder: {n_latnt: 4}\n")
    viewer.open(str(bad), plugin="scnapse")
    assert "step 1" in panel.last_error and "n_latnt" in panel.last_error
