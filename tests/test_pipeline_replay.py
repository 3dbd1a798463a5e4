"""Editing a recorded session and re-running it from a step, as the Pipeline panel does: the same
numbers as ``scnapse run`` on the edited file; cancel; drop; undo; checks before anything runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import scnapse as sn
from scnapse.cli import main
from scnapse.pipeline import PipelineError
from scnapse.pipeline.replay import Cancelled, Snapshots, rerun_from
from scnapse.pipeline.session import Session

STEPS = [("scanpy.pp.normalize_total", {"target_sum": 10000}), ("scanpy.pp.log1p", {}),
         ("scnapse.tl.autoencoder", {"n_latent": 4, "max_epochs": 3}),
         ("scanpy.pp.neighbors", {"use_rep": "X_autoencoder", "n_neighbors": 10})]


def _session(steps=STEPS) -> Session:
    s = Session(input={"dataset": "pbmc68k"}, seed=1)
    for name, params in steps:
        s.record(name, params)
    return s


def test_edit_middle_step_and_rerun_equals_scnapse_run(tmp_path):
    session = _session()
    snaps = Snapshots()
    first = rerun_from(session, 0, snapshots=snaps)
    session.set_params("autoencoder", {"n_latent": 6, "max_epochs": 3})
    assert [session.status[s["id"]]["state"] for s in session.steps] == ["ran", "ran", "changed since", "changed since"]
    states = []
    out = rerun_from(session, 2, snapshots=snaps, on_step=lambda i, st, sec, msg: states.append((i, st)))
    assert states == [(2, "running"), (2, "ran"), (3, "running"), (3, "ran")]  # steps 0-1 from the snapshot
    assert out.obsm["X_autoencoder"].shape == (700, 6) and first.obsm["X_autoencoder"].shape == (700, 4)
    path = tmp_path / "edited.yaml"
    path.write_text(session.to_pipeline(output=str(tmp_path / "out.h5ad")).to_yaml())
    assert main(["run", str(path)]) == 0
    import anndata as ad

    ref = ad.read_h5ad(tmp_path / "out.h5ad")
    assert np.array_equal(out.obsm["X_autoencoder"], ref.obsm["X_autoencoder"])
    assert np.array_equal(out.obsp["connectivities"].toarray(), ref.obsp["connectivities"].toarray())


def test_cancel_stops_the_pipeline_and_drop_undo():
    session = _session()
    cancel = threading.Event()
    seen = []

    def on_step(i, state, sec, msg):
        seen.append((i, state))
        if state == "running" and i == 2:
            cancel.set()  # mid-pipeline: during the autoencoder's training

    with pytest.raises(Cancelled):
        rerun_from(session, 0, on_step=on_step, cancel=cancel)
    assert seen[-1] == (2, "cancelled") and (3, "running") not in seen
    removed = session.drop("log1p")
    assert removed["step"] == "scanpy.pp.log1p" and len(session.steps) == 3
    assert session.undo() and [s["id"] for s in session.steps] == ["normalize_total", "log1p", "autoencoder",
                                                                     "neighbors"]
    assert not session.undo()


def test_a_failing_pipeline_names_the_step_before_anything_runs():
    session = _session()
    session.set_params("autoencoder", {"n_latent": 4, "optimiser": "adam"})
    ran = []
    with pytest.raises(PipelineError, match=r"step 3 \(autoencoder\).*optimiser"):
        rerun_from(session, 0, on_step=lambda *a: ran.append(a))
    assert ran == []
    with pytest.raises(PipelineError, match="cannot be re-run"):
        rerun_from(Session(steps=[{"step": "scanpy.pp.log1p", "id": "log1p", "params": {}}]))
    assert sn.datasets.pbmc68k().n_obs == 700
