"""Shared fixtures: tiny synthetic data for mechanics, the bundled real data for biology."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from scipy import sparse

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import scnapse as sn  # noqa: E402

sn.settings.verbosity = 30  # warnings only in tests


def _has_gpu() -> bool:
    return torch.cuda.is_available() or (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    )


def _no_display() -> str | None:
    """Why the GUI tests cannot run here (no display and no offscreen Qt platform), else None."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    return ("napari tests need a display: none here (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM unset); "
            "run them under xvfb-run, or with QT_QPA_PLATFORM=offscreen")


class _SkippedGuiModule(pytest.File):
    """A GUI test module that is not imported (importing Qt without a display can abort Python):
    it stands as one test, reported skipped with the reason."""

    def collect(self):
        yield _SkippedGuiTests.from_parent(self, name="gui_tests")


class _SkippedGuiTests(pytest.Item):
    def runtest(self):
        pytest.skip(_no_display())

    def reportinfo(self):
        return self.path, None, f"{self.path.name} (not imported: no display)"


def pytest_pycollect_makemodule(module_path, parent):
    # before the module is imported, so before anything imports Qt
    if "napari" in module_path.parts[-2:-1] and _no_display():
        return _SkippedGuiModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items):
    reason = _no_display()
    if reason:
        skip_gui = pytest.mark.skip(reason=reason)
        for item in items:
            if "napari" in item.keywords and item.get_closest_marker("napari") is not None:
                item.add_marker(skip_gui)
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA or MPS device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_counts(n_obs: int = 120, n_vars: int = 40, n_types: int = 3, seed: int = 0) -> AnnData:
    """Negative-binomial counts with ``n_types`` cell types that differ in a block of genes."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_obs)
    base = rng.gamma(2.0, 1.0, n_vars)
    mean = np.tile(base, (n_obs, 1))
    block = max(1, n_vars // n_types)
    for t in range(n_types):
        mean[types == t, t * block : (t + 1) * block] *= 6.0
    lib = rng.lognormal(0, 0.3, n_obs)[:, None]
    counts = rng.negative_binomial(5, 5 / (5 + mean * lib)).astype(np.float32)
    adata = AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types])},
                         index=[f"cell{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_vars)]),
    )
    return adata


@pytest.fixture
def counts_adata() -> AnnData:
    return make_counts()


@pytest.fixture
def lognorm_adata() -> AnnData:
    import scanpy as sc

    adata = make_counts()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.fixture(scope="session")
def pbmc68k() -> AnnData:
    return sn.datasets.pbmc68k()


@pytest.fixture
def tiny() -> dict:
    """Options for a fast tiny model: few epochs, no progress bar."""
    return {"max_epochs": 5, "progress": False, "seed": 0}


@pytest.fixture(autouse=True)
def _no_measured_load(monkeypatch):
    """``threads="auto"`` subtracts the CPUs other programs keep busy when a step starts; tests
    see an idle machine so the count (and so the numbers) never depend on what else runs. The
    measurement itself is tested in test_threads.py."""
    from scnapse import _settings

    monkeypatch.setattr(_settings, "busy_cpus", lambda window=0.1, max_age=5.0: 0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CNNs and recurrent nets gain nothing from a second thread and lose much on a busy
    (shared) machine: modules that train them use this (``pytestmark``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def forecast_in_time_course_panel(viewer, qtbot, *, hidden: int, max_epochs: int, seed: int):
    """Forecast the tracks in ``viewer`` from a new Time course panel (2 steps ahead, tiny and
    fast training, one thread) and wait for it; returns the panel."""
    from scnapse.napari import TimeCourseWidget

    panel = TimeCourseWidget(viewer)
    panel.task.value = "forecast"
    panel.hidden.value = hidden
    panel.horizon.value = 2
    panel.train_options.set_values(max_epochs=max_epochs, early_stopping=0, batch_size=64, seed=seed, threads=1)
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_error is None, panel.last_error
    return panel
