"""The cell classifier's logistic-regression start and baseline, and feature matrices of any kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anndata import AnnData
from conftest import make_counts
from sklearn.linear_model import LogisticRegression

import scnapse as sn
from scnapse.models.classifier import CellClassifier

FAST = {"max_epochs": 20, "batch_size": 64, "progress": False, "seed": 0}


def _lognorm(X: np.ndarray) -> np.ndarray:
    return np.log1p(X / X.sum(1, keepdims=True) * 1e4)


def _proba(model: CellClassifier, adata: AnnData) -> np.ndarray:
    """Softmax of the logits before temperature scaling."""
    logits = torch.cat([h for _, h, _ in model.iter_scores(adata)])
    return torch.softmax(logits, 1).numpy()


# -- the logistic-regression path ---------------------------------------------------------------
def test_starts_at_the_logistic_regression_solution():
    adata = make_counts(n_obs=150, n_vars=30, n_types=3, seed=1)
    # no validation split (all cells train the regression), no class weights, and a learning rate
    # too small to move: the network is still at its start
    model = CellClassifier(hidden=(16,), class_weight=None, validation_fraction=0.0, max_epochs=1,
                           lr=1e-12, seed=0).fit(adata, labels_key="cell_type", progress=False)
    x = _lognorm(adata.X.toarray().astype(np.float64))
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-8] = 1
    lr = LogisticRegression(C=model.lr_penalty, max_iter=5000, tol=1e-10).fit((x - mean) / std,
                                                                             adata.obs["cell_type"].cat.codes)
    expected = lr.predict_proba((x - mean) / std)
    np.testing.assert_allclose(_proba(model, adata), expected, atol=2e-3)
    # the MLP's output layer starts at zero
    assert float(model.module.head.weight.abs().max()) < 1e-6


def test_keeps_its_start_and_refits_the_logistic_regression_on_every_labelled_cell():
    adata = make_counts(n_obs=150, n_vars=30, n_types=3, seed=1)
    # a learning rate too small to move: no epoch beats the start ("epoch 0"), which early stopping
    # keeps; the linear path is then fitted again on all labelled cells, validation cells included
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(16,), validation_fraction=0.2,
                                   max_epochs=10, early_stopping=2, lr=1e-12, progress=False, seed=0)
    assert model.history.best_epoch == 0 and model.history.epoch == [1, 2]
    assert model.history.start_val_loss == pytest.approx(model.history.val_loss[0], rel=1e-4)
    assert model.module.head.weight.detach().abs().max().item() == 0.0  # the MLP's output is still zero
    assert model.params["linear_refit_cells"] == adata.n_obs and model.params["n_validation"] > 0
    x = _lognorm(adata.X.toarray().astype(np.float64))
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-8] = 1
    z, y = (x - mean) / std, adata.obs["cell_type"].cat.codes
    # the default class weights: each class weighs as much, over all the labelled cells
    lr = LogisticRegression(C=model.lr_penalty, class_weight="balanced", max_iter=5000, tol=1e-10).fit(z, y)
    np.testing.assert_allclose(_proba(model, adata), lr.predict_proba(z), atol=2e-3)
    # the baseline was scored before the refit: the logistic regression of the training cells
    assert model.baseline["method"] == "logistic regression"
    # the loss plot draws the start at epoch 0 and marks it as the weights kept
    ax = sn.pl.loss(adata, "classifier")
    assert ax.lines[1].get_xdata()[0] == 0
    assert "best epoch (0: the start was kept)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_lr_penalty_default_and_older_models_keep_theirs(tmp_path):
    import json

    assert CellClassifier().lr_penalty == 1.0
    adata = make_counts(n_obs=120, n_vars=30, n_types=3, seed=3)
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(8,), **{**FAST, "max_epochs": 2})
    path = model.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    del config["architecture"]["lr_penalty"]  # saved before the option existed: C was 1e-3
    (path / "config.json").write_text(json.dumps(config))
    assert CellClassifier.load(path).lr_penalty == 1e-3


def test_linear_init_off_saved_and_baseline_recorded(tmp_path):
    adata = make_counts(n_obs=160, n_vars=30, n_types=3, seed=2)
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(16,), **FAST)
    rec = adata.uns["classifier"]["baseline"]
    assert rec["method"] == "logistic regression" and rec["n"] == adata.uns["classifier"]["params"]["n_validation"]
    assert rec["network"] == pytest.approx(model.metrics["macro_f1"])
    assert "held-out cells" in rec["text"]
    assert adata.uns["classifier"]["params"]["linear_init"] is True
    assert model.module.linear is not None and not model.module.linear.weight.requires_grad
    back = CellClassifier.load(model.save(tmp_path / "m"))
    assert back.linear_init and back.baseline["baseline"] == pytest.approx(rec["baseline"])
    np.testing.assert_allclose(back.predict_proba(adata), model.predict_proba(adata), atol=1e-6)
    plain = CellClassifier(hidden=(16,), linear_init=False, **{k: v for k, v in FAST.items() if k != "progress"})
    plain.fit(adata, labels_key="cell_type", progress=False)
    assert plain.module.linear is None and plain.params["linear_init"] is False
    assert plain.baseline["method"] == "logistic regression"
    assert not CellClassifier.load(plain.save(tmp_path / "p")).linear_init
    with pytest.raises(ValueError, match="linear_init"):
        CellClassifier(linear_init="yes")


def test_warns_when_the_network_is_not_better(monkeypatch):
    adata = make_counts(n_obs=120, n_vars=30, n_types=3, seed=4)
    monkeypatch.setattr(CellClassifier, "_summary", lambda self: "")
    original = CellClassifier._calibrate

    def worse(self, val, k):
        original(self, val, k)
        self.metrics["macro_f1"] = -1.0

    monkeypatch.setattr(CellClassifier, "_calibrate", worse)
    with pytest.warns(UserWarning, match="not better than logistic regression"):
        CellClassifier(hidden=(8,), **{k: v for k, v in FAST.items() if k != "progress"}).fit(
            adata, labels_key="cell_type", progress=False)


@pytest.mark.slow
def test_default_not_below_logistic_regression_on_pbmc68k():
    adata = sn.datasets.pbmc68k()
    model = sn.tl.train_classifier(adata, labels_key="bulk_labels", progress=False, seed=0)
    rec = adata.uns["classifier"]["baseline"]
    se = np.sqrt(rec["baseline"] * (1 - rec["baseline"]) / rec["n"])
    assert rec["network"] >= rec["baseline"] - se, rec["text"]
    assert model.metrics["macro_f1"] > 0.6


# -- any feature matrix -------------------------------------------------------------------------
def _protein_like(n_obs=240, n_vars=25, n_types=3, seed=0):
    """z-scored protein-like features: negative values, class-dependent means."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_types), n_obs // n_types)
    centres = rng.normal(0, 1.5, (n_types, n_vars))
    X = centres[y] + rng.normal(0, 1, (len(y), n_vars))
    X = ((X - X.mean(0)) / X.std(0) * 3 + 1).astype(np.float32)
    adata = AnnData(X)
    adata.var_names = [f"protein{i}" for i in range(n_vars)]
    adata.obs["cell_type"] = np.array(["A", "B", "C"])[y]
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata


def test_trains_and_annotates_negative_features(tmp_path):
    adata = _protein_like()
    assert adata.X.min() < 0
    before = adata.X.copy()
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(16,), **FAST)
    np.testing.assert_array_equal(adata.X, before)  # the user's data are not changed
    assert model.input_kind == "features" and adata.uns["classifier"]["params"]["input"] == "features"
    assert model.prep.scale and not model.prep.log_normalize
    np.testing.assert_allclose(model.prep.mean.cpu().numpy(), adata.X.mean(0), atol=1e-4)
    query = _protein_like(seed=0)[::2].copy()
    sn.tl.annotate(query, model, min_typicality=0.0, min_confidence=0.0)
    acc = (query.obs["predicted"].astype(str) == query.obs["cell_type"].astype(str)).mean()
    assert acc > 0.9
    assert query.uns["predicted"]["params"]["query_input"] == "features"
    back = CellClassifier.load(model.save(tmp_path / "f"))
    assert back.input_kind == "features"
    np.testing.assert_allclose(back.predict_proba(query), model.predict_proba(query), atol=1e-6)
    # shifting the query's values of the query changes the answer: the training statistics are used
    shifted = query.copy()
    shifted.X = shifted.X + 100.0
    assert not np.allclose(model.predict_proba(shifted), model.predict_proba(query), atol=1e-2)


def test_large_nonnegative_features_are_standardised():
    adata = _protein_like()
    adata.X = (adata.X - adata.X.min() + 0.5) * 40  # e.g. areas and intensities: not counts, not logs
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(16,), **FAST)
    assert model.input_kind == "features"


def test_only_nonfinite_values_are_refused():
    adata = _protein_like()
    adata.X[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        sn.tl.train_classifier(adata, labels_key="cell_type", **FAST)
    model = sn.tl.train_classifier(_protein_like(), labels_key="cell_type", hidden=(8,), **FAST)
    query = _protein_like()[:20].copy()
    query.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        sn.tl.annotate(query, model)


def test_query_forms_are_converted_or_refused():
    adata = make_counts(n_obs=180, n_vars=40, n_types=3, seed=5)
    model = sn.tl.train_classifier(adata, labels_key="cell_type", hidden=(16,), **FAST)
    assert model.input_kind == "counts"
    expected = model.predict_proba(adata)
    normed = adata.copy()
    sn_total = normed.X.toarray()
    normed.X = (sn_total / sn_total.sum(1, keepdims=True) * 5e3).astype(np.float32)  # normalize_total only
    np.testing.assert_allclose(model.predict_proba(normed), expected, atol=1e-4)
    logged = normed.copy()
    logged.X = np.log1p(logged.X)
    np.testing.assert_allclose(model.predict_proba(logged), expected, atol=1e-3)
    scaled = adata.copy()
    scaled.X = adata.X.toarray() - 1.0
    with pytest.raises(ValueError, match="negative values"):
        model.predict_proba(scaled)
