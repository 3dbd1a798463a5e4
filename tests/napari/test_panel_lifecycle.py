"""A panel's life with the viewer: closing napari mid-training, Cancel before the first epoch,
pickers that follow the panel's own cells picker, a scrolling layout and clipped errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

from scnapse.napari import AutoencoderWidget, CellClassifierWidget, get_adata  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def h5ad_path(tmp_path) -> Path:
    adata = make_counts()
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2))
    adata.obs["batch2"] = adata.obs["cell_type"].astype(str).str.upper().astype("category")
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_closing_the_viewer_stops_training_and_exits_cleanly(h5ad_path, tmp_path):
    """A 500-epoch run, then the window closes: the worker stops within 1 s, exit code 0."""
    script = textwrap.dedent(f"""
        import time, napari
        from qtpy.QtCore import QTimer
        from scnapse.napari import AutoencoderWidget
        viewer = napari.Viewer(show=True)
        viewer.open({str(h5ad_path)!r}, plugin="scnapse")
        panel = AutoencoderWidget(viewer)
        viewer.window.add_dock_widget(panel)
        panel.train_options.set_values(max_epochs=500, early_stopping=0, batch_size=8)
        seen = []
        def close():
            t0 = time.perf_counter()
            viewer.close()
            ok = panel._finished.wait(5)
            took = panel.stopped_at - panel.stop_requested_at
            print("STOPPED", ok, round(took, 3), len(seen), flush=True)
        panel._relay.report.connect(lambda r: seen.append(r.epoch))
        panel._relay.report.connect(lambda r: QTimer.singleShot(0, close) if r.epoch == 2 else None)
        panel.run()
        napari.run()
    """)
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("STOPPED"))
    _, ok, seconds, epochs = line.split()
    assert ok == "True" and float(seconds) < 1.0 and int(epochs) < 500


def test_cancel_before_the_first_epoch_changes_nothing(h5ad_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.open(str(h5ad_path), plugin="scnapse")[0]
    adata = get_adata(layer)
    before = layer.data.copy()
    keys = (set(adata.obsm), set(adata.uns), list(adata.obs.columns))
    panel = AutoencoderWidget(viewer)
    panel.train_options.set_values(max_epochs=50, early_stopping=0, batch_size=16)
    panel.run()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel._last_report is None, "the test meant to cancel before the first epoch"
    assert np.array_equal(layer.data, before)
    assert (set(adata.obsm), set(adata.uns), list(adata.obs.columns)) == keys
    assert layer.metadata["scnapse_session"].steps == []
    assert "nothing changed" in panel.status.text()
    assert panel.run_button.isEnabled()


def test_pickers_follow_the_panel_cells_picker(h5ad_path, tmp_path, make_napari_viewer):
    viewer = make_napari_viewer()
    first = viewer.open(str(h5ad_path), plugin="scnapse")[0]
    other = make_counts()
    other.obs["tissue"] = other.obs["cell_type"].astype(str).astype("category")
    other.obsm["X_umap"] = np.zeros((other.n_obs, 2))
    other_path = tmp_path / "other.h5ad"
    other.write_h5ad(other_path)
    second = viewer.open(str(other_path), plugin="scnapse")[0]
    panel = CellClassifierWidget(viewer)
    panel.cells.value = first
    text = repr([getattr(w, "choices", None) for w in _all_widgets(panel)])
    assert "batch2" in text and "tissue" not in text
    panel.cells.value = second
    text = repr([getattr(w, "choices", None) for w in _all_widgets(panel)])
    assert "tissue" in text and "batch2" not in text


def _all_widgets(panel):
    from magicgui.widgets import Container

    out, todo = [], [panel.inputs, panel.options]
    while todo:
        w = todo.pop()
        if isinstance(w, Container):
            todo += list(w)
        elif w is not None:
            out.append(w)
    return out


def test_panel_scrolls_and_long_errors_are_clipped(h5ad_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open(str(h5ad_path), plugin="scnapse")
    panel = AutoencoderWidget(viewer)
    assert panel.scroll.widget() is not None and panel.sizeHint().height() <= 1000
    panel._error(ValueError("x" * 5000 + "\n" + "\n".join(f"class {i}" for i in range(700))))
    assert len(panel.last_error) > 5000
    assert len(panel.status.text()) < 400 and panel.status.wordWrap()


def test_dimensions_field_checks_when_typing_ends(h5ad_path, make_napari_viewer, qtbot, monkeypatch):
    """Typing "1, 0" key by key raises nothing; Enter applies it (once)."""
    from qtpy.QtCore import Qt

    from scnapse.napari import CellsWidget

    viewer = make_napari_viewer()
    layer = viewer.open(str(h5ad_path), plugin="scnapse")[0]
    adata = get_adata(layer)
    adata.obsm["X_3d"] = np.random.default_rng(0).normal(size=(adata.n_obs, 3))
    panel = CellsWidget(viewer)
    panel.embedding.value = "X_3d"
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    edit = panel.dims.native
    edit.clear()
    for key in "1, 0":
        qtbot.keyClicks(edit, key)
    assert errors == [] and panel.dims.value == "1, 0"
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert errors == []
    assert panel.cells.value.metadata["scnapse_view"]["dims"] == (1, 0)


def test_done_line_says_epochs_best_epoch_and_final_losses(h5ad_path, make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open(str(h5ad_path), plugin="scnapse")
    panel = AutoencoderWidget(viewer)
    panel.train_options.set_values(max_epochs=3, early_stopping=0, batch_size=64, validation_fraction=0.2)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    text = panel.status.text()
    assert "done" in text and "3 epochs" in text and "best epoch" in text
    assert f"train {panel.loss_plot.train[-1]:.4g}" in text and f"validation {panel.loss_plot.val[-1]:.4g}" in text
