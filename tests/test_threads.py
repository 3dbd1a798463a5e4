"""Thread counts: the default from the CPUs this process may use, one setting for torch and the
BLAS/OpenMP pools, recorded in provenance and in session pipelines so re-runs give the same numbers."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pytest
import torch

import scnapse as sn
from scnapse import _settings
from scnapse.pipeline import Session
from scnapse.train import RunOptions, thread_limits
from scnapse.train.config import OptionError


def test_auto_is_the_affinity_capped_by_the_cgroup_quota(monkeypatch, tmp_path):
    import os

    assert _settings.resolve_threads("auto") == _settings.available_cpus() <= len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert _settings._cgroup_cpus(str(quota)) == 1
    quota.write_text("max 100000\n")
    assert _settings._cgroup_cpus(str(quota)) is None
    assert _settings._cgroup_cpus(str(tmp_path / "missing")) is None
    monkeypatch.setattr(_settings, "_cgroup_cpus", lambda: 1)
    assert _settings.available_cpus() == 1
    monkeypatch.setattr(sn.settings, "n_threads", 3)
    assert _settings.resolve_threads() == 3 and _settings.resolve_threads(2) == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, "two", True])
def test_a_bad_thread_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="positive whole number"):
        _settings.resolve_threads(bad)
    with pytest.raises(OptionError, match="threads="):
        RunOptions(threads=bad)


def test_thread_limits_sets_torch_and_the_blas_pools_and_restores_them():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with thread_limits(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


def test_threads_are_used_and_recorded_in_provenance(lognorm_adata):
    before = torch.get_num_threads()
    seen = []
    sn.tl.autoencoder(lognorm_adata, n_latent=2, hidden=[8], max_epochs=1, progress=False, threads=1,
                      callback=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    params = lognorm_adata.uns["scnapse"]["autoencoder"]["params"] if "scnapse" in lognorm_adata.uns else None
    text = repr(dict(lognorm_adata.uns))
    assert "'threads': 1" in text, params


def test_a_session_pipeline_re_runs_with_the_recorded_threads_bit_identically(monkeypatch, lognorm_adata):
    options = {"n_latent": 2, "hidden": [16], "max_epochs": 2, "progress": False}
    monkeypatch.setattr(sn.settings, "n_threads", 1)  # the GUI ran on one thread
    gui = sn.tl.autoencoder(lognorm_adata, copy=True, **options)
    session = Session(seed=0)
    session.record("scnapse.tl.autoencoder", options)
    pipe = session.to_pipeline()
    assert pipe.steps[0].params["threads"] == 1
    monkeypatch.setattr(sn.settings, "n_threads", 2)  # the CLI re-run's default differs
    rerun = pipe.run(lognorm_adata.copy(), write=False)
    np.testing.assert_array_equal(rerun.obsm["X_autoencoder"], gui.obsm["X_autoencoder"])


def test_auto_gives_recurrent_training_one_thread_and_an_explicit_count_is_kept(monkeypatch):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 4)
    assert _settings.AUTO_THREAD_CAP["recurrent"] == 1
    assert _settings.resolve_threads("auto") == 4
    assert _settings.resolve_threads("auto", "recurrent") == 1
    assert _settings.resolve_threads(3, "recurrent") == 3
    assert RunOptions().n_threads("recurrent") == 1 and RunOptions(threads=2).n_threads("recurrent") == 2
    monkeypatch.setattr(_settings, "available_cpus", lambda: 1)
    assert _settings.resolve_threads("auto") == 1  # never more than the CPUs there are


def test_sequence_models_train_on_one_thread_by_default_and_record_it(monkeypatch):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 2)
    seqs = sn.ts.simulate_oscillations(24, min_length=5, max_length=8, seed=0)
    seen = []
    options = {"hidden": (4,), "max_epochs": 1, "progress": False,
               "callback": lambda r: seen.append(torch.get_num_threads())}
    model = sn.tl.train_sequence_classifier(seqs, labels_key="label", **options)
    assert seen == [1] and model.params["threads"] == 1
    model = sn.tl.train_sequence_classifier(seqs, labels_key="label", threads=2, **options)
    assert seen == [1, 2] and model.params["threads"] == 2
    fc = sn.tl.train_forecaster(seqs, horizon=2, ar_order=2, **options)
    assert seen[-1] == 1 and fc.params["threads"] == 1


def test_a_session_records_the_thread_count_each_step_used(monkeypatch):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 2)
    session = Session(seed=0)
    session.record("scnapse.tl.sequence_embedding", {"max_epochs": 1})
    session.record("scnapse.tl.autoencoder", {"max_epochs": 1})
    threads = [s.params["threads"] for s in session.to_pipeline().steps]
    assert threads == [1, 2]


_measure_busy_cpus = _settings.busy_cpus  # the real one: conftest gives every test an idle machine


def test_auto_leaves_out_the_cpus_other_programs_keep_busy(monkeypatch):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 4)
    for busy, expected in [(0, 4), (1, 3), (3, 1), (9, 1)]:
        monkeypatch.setattr(_settings, "busy_cpus", lambda window=0.1, max_age=5.0, b=busy: b)
        assert _settings.resolve_threads("auto") == expected
        assert _settings.resolve_threads(4) == 4  # an explicit count whatever the load
    calls = []
    monkeypatch.setattr(_settings, "busy_cpus", lambda window=0.1, max_age=5.0: calls.append(1) or 0)
    assert _settings.resolve_threads("auto", "recurrent") == 1 and not calls  # one thread: nothing to measure


def test_busy_cpus_counts_whole_cpus_from_the_kernel_s_figures(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(_settings, "_cpu_samples", [])
    ticks = iter([{0: (0, 100), 1: (0, 100)}, {0: (95, 200), 1: (10, 200)}])
    monkeypatch.setattr(_settings, "_cpu_times", lambda cpus: next(ticks))
    assert _measure_busy_cpus(window=0.01, max_age=0) == 1  # 0.95 + 0.10 of a CPU taken
    ticks = iter([{0: (0, 100), 1: (0, 100)}, {0: (10, 200), 1: (5, 200)}])
    assert _measure_busy_cpus(window=0.01, max_age=0) == 0  # 0.15 of a CPU in all: background noise
    ticks = iter([{0: (0, 100), 1: (0, 100)}, {0: (20, 200), 1: (20, 200)}])
    assert _measure_busy_cpus(window=0.01, max_age=0) == 1  # 0.4 of a CPU: enough to slow a second thread


def test_busy_cpus_measures_since_the_last_reading_without_waiting(monkeypatch):
    import time

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(_settings, "_cpu_samples", [])
    monkeypatch.setattr(_settings, "_cpu_times", lambda cpus: {0: (0, 100), 1: (0, 100)})
    _settings.note_cpu_sample()  # a step ends
    time.sleep(0.05)
    ticks = iter([{0: (90, 200), 1: (0, 200)}])  # a CPU busy since then
    monkeypatch.setattr(_settings, "_cpu_times", lambda cpus: next(ticks))
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("measured afresh although a recent reading exists"))
    assert _measure_busy_cpus(window=0.01, max_age=5) == 1
    monkeypatch.setattr(_settings, "_cpu_samples", [(time.perf_counter() - 60, {0: (0, 0), 1: (0, 0)}, 0.0)])
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    ticks = iter([{0: (0, 100), 1: (0, 100)}, {0: (0, 200), 1: (0, 200)}])
    assert _measure_busy_cpus(window=0.01, max_age=5) == 0 and slept == [pytest.approx(0.01, abs=1e-3)]  # a stale reading: a fresh window
    # a reading younger than the window: wait for the rest of the window only
    monkeypatch.setattr(_settings, "_cpu_samples", [(time.perf_counter() - 0.006, {0: (0, 0), 1: (0, 0)}, time.process_time())])
    slept.clear()
    ticks = iter([{0: (100, 100), 1: (0, 100)}])
    assert _measure_busy_cpus(window=0.01, max_age=5) == 1 and len(slept) == 1 and 0 < slept[0] < 0.005


def test_auto_gives_small_batch_dense_training_one_thread(monkeypatch):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 2)
    assert sn.models.CellClassifier()._thread_workload() == "small-step"  # its default batch of 32
    assert sn.models.CellClassifier(batch_size=256)._thread_workload() is None
    assert sn.models.Autoencoder(batch_size=16)._thread_workload() == "small-step"
    assert sn.models.Autoencoder()._thread_workload() is None
    # the step's size decides too: 128 cells × 765 genes × 128 units share badly, × 5,000 genes well
    few, many = (ad.AnnData(np.zeros((4, n), dtype=np.float32)) for n in (765, 5000))
    assert sn.models.Autoencoder()._thread_workload(few) == "small-step"
    assert sn.models.Autoencoder()._thread_workload(many) is None
    assert sn.models.Autoencoder(hidden=(512,), batch_size=256)._thread_workload(few) is None
    assert _settings.resolve_threads("auto", "small-step") == 1
    assert _settings.resolve_threads("auto", None) == 2
    session = Session(seed=0)
    session.record("scnapse.tl.train_classifier", {"labels_key": "cell_type"})
    assert session.to_pipeline().steps[0].params["threads"] == 1


def test_busy_cpus_sees_a_cpu_bound_program(monkeypatch):
    monkeypatch.setattr(_settings, "_cpu_samples", [])
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert _measure_busy_cpus(window=0.5, max_age=0) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_the_count_recorded_is_the_count_the_training_used(monkeypatch, lognorm_adata):
    monkeypatch.setattr(_settings, "available_cpus", lambda: 2)
    load = iter([1, 0, 0, 0])  # busy when the step starts, idle afterwards
    monkeypatch.setattr(_settings, "busy_cpus", lambda window=0.1, max_age=5.0: next(load))
    seen = []
    model = sn.tl.autoencoder(lognorm_adata, n_latent=2, hidden=[8], max_epochs=1, progress=False, copy=True,
                              callback=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [1]
    assert model.uns["autoencoder"]["params"]["threads"] == 1
