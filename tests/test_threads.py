"""Thread counts: the default from the CPUs this process may use, one setting for torch and the
BLAS/OpenMP pools, recorded in provenance and in session pipelines so re-runs give the same numbers."""

from __future__ import annotations

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
