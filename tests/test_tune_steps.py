"""sn.tl.tune works on every training step from its registration alone: two tiny trials each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scnapse as sn
from scnapse.pipeline import registry
from scnapse.pipeline.registry import step, steps_where

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING_STEPS = {
    "scnapse.tl.autoencoder", "scnapse.tl.train_classifier", "scnapse.tl.image_embedding",
    "scnapse.tl.train_image_classifier", "scnapse.tl.sequence_embedding", "scnapse.tl.train_sequence_classifier",
    "scnapse.tl.train_forecaster",
}


def _cells():
    image, labels, classes = sn.im.synthetic_image(8, seed=0)
    cells = sn.im.cells_from_labels(image, labels, size=16)
    cells.obs["annotation"] = pd.Categorical([str(c) for c in classes[: cells.n_obs]])
    return cells


def _sequences():
    from scnapse.ts._synthetic import simulate_oscillations

    return simulate_oscillations(40, max_length=16, min_length=10, seed=0)


#: step → (its data, the tune options it needs, a searched option of the step itself)
CASES = {
    "scnapse.tl.autoencoder": ("lognorm", {}, {"hidden": [[4], [8]]}),
    "scnapse.tl.train_classifier": ("lognorm", {"labels_key": "cell_type"}, {"hidden": [[4], [8]]}),
    "scnapse.tl.image_embedding": ("cells", {}, {"channels": [[4], [4, 8]]}),
    "scnapse.tl.train_image_classifier": ("cells", {"labels_key": "annotation"}, {"channels": [[4], [4, 8]]}),
    "scnapse.tl.sequence_embedding": ("sequences", {}, {"n_latent": {"int": [2, 3]}}),
    "scnapse.tl.train_sequence_classifier": ("sequences", {"labels_key": "label"}, {"n_layers": [1, 2]}),
    "scnapse.tl.train_forecaster": ("sequences", {}, {"horizon": {"int": [1, 2]}}),
}


def test_the_training_steps_are_the_seven():
    assert set(steps_where(trains=True)) == TRAINING_STEPS == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_training_step_tunes(name, lognorm_adata):
    kind, options, own = CASES[name]
    adata = {"lognorm": lognorm_adata, "cells": _cells(), "sequences": _sequences()}[kind]
    before = (set(adata.obsm), set(adata.uns), set(adata.obs.columns))
    space = {"lr": {"log_uniform": [1e-3, 1e-2]}, **own}
    sn.tl.tune(adata, step=name, space=space, n_trials=2, sampler="random", prune=False,
               fixed={"max_epochs": 2, "batch_size": 16}, **options)
    rec = adata.uns["tune"]
    assert rec["step"] == name and rec["n_trials"] == 2
    assert len(rec["trials"]) == 2 and (rec["trials"]["state"] == "complete").all()
    assert np.isfinite(rec["best_value"])
    assert rec["best_value"] == (rec["trials"][rec["metric"]].max() if rec["maximize"]
                                 else rec["trials"][rec["metric"]].min())
    best = dict(rec["best_params"])
    assert 1e-3 <= best["lr"] <= 1e-2 and set(own) <= set(best)
    # the trials' own outputs are gone again: only uns["tune"] was added
    assert (set(adata.obsm), set(adata.uns) - {"tune"}, set(adata.obs.columns)) == before


def test_the_metric_comes_from_the_registration(lognorm_adata):
    sn.tl.tune(lognorm_adata, step="train_classifier", labels_key="cell_type", space={"lr": [1e-3, 1e-2]},
               n_trials=1, fixed={"max_epochs": 2})
    assert lognorm_adata.uns["tune"]["metric"] == "macro_f1" and lognorm_adata.uns["tune"]["maximize"]
    with pytest.raises(ValueError, match="needs labels_key"):
        sn.tl.tune(lognorm_adata, step=sn.tl.train_classifier, space={"lr": [1e-3]}, n_trials=1)
    with pytest.raises(ValueError, match="cannot be tuned; choose a training step"):
        sn.tl.tune(lognorm_adata, step="annotate", space={"lr": [1e-3]}, n_trials=1)


def test_a_new_training_step_is_tunable_by_its_registration(monkeypatch, lognorm_adata):
    def toy(adata, *, width: int = 4, progress=True, callback=None, cancel=None, **train_options):
        """A training step made of the autoencoder: registered, it can be tuned."""
        sn.tl.autoencoder(adata, n_latent=2, hidden=(width,), key_added="X_toy", progress=progress,
                          callback=callback, cancel=cancel, **train_options)

    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    monkeypatch.setattr(registry, "_NAMES", dict(registry._NAMES))
    step("scnapse.test.toy", trains=True)(toy)
    sn.tl.tune(lognorm_adata, step=toy, space={"width": [2, 4]}, n_trials=2, sampler="grid",
               fixed={"max_epochs": 2})
    rec = lognorm_adata.uns["tune"]
    assert rec["step"] == "scnapse.test.toy" and rec["metric"] == "val_loss" and np.isfinite(rec["best_value"])
    assert sorted(rec["trials"]["width"]) == [2, 4] and "X_toy" not in lognorm_adata.obsm
