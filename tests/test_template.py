"""The one training template: every family gets checkpoints and resume, mixed precision, run
options and the shared label rules through the same code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import scnapse as sn
from scnapse.models import Autoencoder, CellClassifier, ImageModel, SequenceModel
from scnapse.train import RunOptions

from conftest import make_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPOCHS = 4
COMMON = {"max_epochs": EPOCHS, "seed": 0, "batch_size": 16}


def _cells():
    image, labels, classes = sn.im.synthetic_image(16, kind="texture", seed=3)
    cells = sn.im.cells_from_labels(image, labels, size=16)
    truth = classes[cells.obs["label"].to_numpy() - 1]
    annotation = pd.Series(truth, dtype=object)
    annotation[::3] = np.nan  # some cells unannotated
    cells.obs["annotation"] = pd.Categorical(annotation.to_numpy())
    return cells


def _sequences():
    return sn.ts.simulate_oscillations(40, min_length=6, max_length=12, seed=0)


#: one case per public training step: (model factory, data factory, fit keywords)
CASES = {
    "autoencoder": (lambda: Autoencoder(3, hidden=(8,), **COMMON), lambda: make_counts(60, 20), {}),
    "train_classifier": (lambda: CellClassifier(hidden=(8,), **COMMON), lambda: make_counts(60, 20),
                         {"labels_key": "cell_type"}),
    "train_image_classifier": (lambda: ImageModel("classify", channels=(4, 8), **COMMON), _cells,
                               {"labels_key": "annotation"}),
    "image_embedding": (lambda: ImageModel("embed", n_latent=3, channels=(4, 8), **COMMON), _cells, {}),
    "sequence_embedding": (lambda: SequenceModel("embed", hidden=(8,), n_latent=3, **COMMON), _sequences, {}),
    "train_sequence_classifier": (lambda: SequenceModel("classify", hidden=(8,), **COMMON), _sequences,
                                  {"labels_key": "label"}),
    "train_forecaster": (lambda: SequenceModel("forecast", hidden=(8,), horizon=2, **COMMON), _sequences, {}),
}


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


@pytest.mark.parametrize("case", list(CASES))
def test_stopped_run_resumes_bit_for_bit(case, tmp_path):
    make_model, make_data, kw = CASES[case]
    data = make_data()
    full = make_model().fit(data, progress=False, **kw)
    stopped = make_model().fit(data, progress=False, checkpoint_dir=tmp_path, callback=lambda r: r.epoch < 2, **kw)
    assert stopped.history.epoch == [1, 2] and stopped.history.stopped == "callback"
    resumed = make_model().fit(data, run=RunOptions(progress=False, checkpoint_dir=str(tmp_path), resume=True), **kw)
    assert resumed.params["resumed_from_epoch"] == 2
    assert resumed.history.train_loss == full.history.train_loss
    assert resumed.history.val_loss == full.history.val_loss
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_trains_every_family_on_the_cpu(case):
    make_model, make_data, kw = CASES[case]
    model = make_model().fit(make_data(), progress=False, precision="bf16", **kw)
    assert model.params["precision"] == "bf16"
    assert np.isfinite(model.history.train_loss).all() and len(model.history.epoch) == EPOCHS


@pytest.mark.parametrize("case", list(CASES))
def test_params_record_the_run_and_the_family_defaults(case):
    make_model, make_data, kw = CASES[case]
    model = make_model()
    for name, value in type(model).train_defaults.items():
        if name not in COMMON:  # the family's declared defaults reach its config
            assert getattr(model.config, name) == (tuple(value) if isinstance(value, list) else value), name
    model.fit(make_data(), progress=False, **kw)
    p = model.params
    for key in ("seed", "device", "max_epochs", "n_train", "n_validation", "precision", "world_size", "environment"):
        assert key in p, key
    assert p["seed"] == 0 and p["max_epochs"] == EPOCHS


def test_unknown_run_option_and_resume_without_folder_are_refused():
    adata = make_counts(40, 10)
    with pytest.raises(TypeError, match="Unknown option.*run options"):
        Autoencoder(2, **COMMON).fit(adata, progres=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        Autoencoder(2, **COMMON).fit(adata, progress=False, resume=True)
    with pytest.raises(TypeError, match="RunOptions"):
        Autoencoder(2, **COMMON).fit(adata, run={"progress": False})


# -- one label encoder ------------------------------------------------------------------------
def _labelled(values):
    adata = make_counts(len(values), 10)
    adata.obs["y"] = values
    return adata


FAMILIES = {
    "cells": lambda a: CellClassifier(hidden=(4,), max_epochs=1, seed=0).fit(a, labels_key="y", progress=False),
    "sequences": lambda a: SequenceModel("classify", hidden=(4,), max_epochs=1, seed=0).fit(
        _as_sequences(a), labels_key="y", progress=False),
}


def _as_sequences(adata):
    seqs = sn.ts.simulate_oscillations(adata.n_obs, min_length=5, max_length=8, seed=1)
    seqs.obs["y"] = adata.obs["y"].to_numpy()
    return seqs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_label_rules_are_the_same_in_every_family(family):
    train = FAMILIES[family]
    n = 24
    ints = np.repeat([3, 1, 2], n // 3)  # integer cluster ids are classes, ordered by value
    assert train(_labelled(ints)).classes == ["1", "2", "3"]
    with pytest.raises(ValueError, match="non-integer numbers"):
        train(_labelled(np.linspace(0, 1, n)))
    with pytest.raises(ValueError, match="single labelled cell"):
        train(_labelled(["a"] * (n - 1) + ["b"]))
    with pytest.raises(ValueError, match="Unassigned"):
        train(_labelled(["a", "Unassigned"] * (n // 2)))
    with pytest.raises(ValueError, match="mixes numbers and text"):
        train(_labelled(np.array([1, "1", "2", "a"] * (n // 4), dtype=object)))
    empty = np.array(["a", "b", "", "nan", "None", "b"] * (n // 6), dtype=object)
    model = train(_labelled(empty)) if family == "sequences" else None
    if family == "cells":
        with pytest.warns(UserWarning, match="12 of 24 cells have no label"):
            model = train(_labelled(empty))
    assert model.classes == ["a", "b"]  # "", "nan" and "None" are missing labels, not classes


def test_class_weight_vocabulary_is_shared_and_old_names_still_work():
    adata = make_counts(60, 20)
    for cls in (CellClassifier, ImageModel, SequenceModel):
        with pytest.raises(ValueError, match="class_weight='smote'.*balanced"):
            cls(class_weight="smote")
    with pytest.warns(FutureWarning, match="class_balance='sampling' is now class_weight='sampling'"):
        old = CellClassifier(hidden=(4,), class_balance="sampling", max_epochs=2, seed=0)
    new = CellClassifier(hidden=(4,), class_weight="sampling", max_epochs=2, seed=0)
    old.fit(adata, labels_key="cell_type", progress=False)
    new.fit(adata, labels_key="cell_type", progress=False)
    assert old.class_weight == new.class_weight == "sampling"
    assert old.history.train_loss == new.history.train_loss
    seqs = _sequences()
    for cw in ("balanced", "sampling", None):
        m = SequenceModel("classify", hidden=(4,), class_weight=cw, max_epochs=1, seed=0)
        assert np.isfinite(m.fit(seqs, labels_key="label", progress=False).history.train_loss).all()


def test_hidden_is_a_sequence_of_widths_everywhere():
    with pytest.raises(ValueError, match="sequence of layer widths"):
        CellClassifier(hidden="128")
    with pytest.raises(ValueError, match="positive integers"):
        Autoencoder(3, hidden=(8.5,))
    assert SequenceModel("embed", hidden=(8, 8)).hidden == [8, 8]
    with pytest.warns(FutureWarning, match="hidden=16 as one number"):
        assert SequenceModel("embed", hidden=16, n_layers=2).hidden == [16, 16]
    with pytest.raises(ValueError, match="share one width"):
        SequenceModel("embed", hidden=(16, 8))


def test_predict_returns_a_categorical_in_every_classifier_family():
    adata = make_counts(60, 20)
    cell = CellClassifier(hidden=(4,), max_epochs=2, seed=0).fit(adata, labels_key="cell_type", progress=False)
    cells = _cells()
    image = ImageModel("classify", channels=(4,), max_epochs=1, seed=0).fit(cells, labels_key="annotation",
                                                                          progress=False)
    seqs = _sequences()
    seq = SequenceModel("classify", hidden=(4,), max_epochs=1, seed=0).fit(seqs, labels_key="label", progress=False)
    for model, data in ((cell, adata), (image, cells), (seq, seqs)):
        pred = model.predict(data)
        assert isinstance(pred, pd.Categorical) and list(pred.categories) == list(model.classes)
        strict = model.predict(data, min_confidence=1.01)  # nothing is that confident
        assert (np.asarray(strict) == "Unassigned").all() and "Unassigned" in strict.categories


def test_a_family_without_its_hooks_says_which_one_is_missing():
    from scnapse.models import BaseModel
    from scnapse.train import TrainConfig

    class Half(BaseModel):
        kind = "Half"

        def __init__(self):
            self.config = TrainConfig(max_epochs=1, seed=0)

    with pytest.raises(TypeError, match=r"Half cannot be trained.*_prepare\(adata"):
        Half()._fit(make_counts(10, 5), None, {"progress": False})
