"""The MLP cell-type classifier: learning, calibration, Unassigned, gene matching, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from conftest import make_counts
from scipy import sparse

import scnapse as sn
from scnapse.models.classifier import UNASSIGNED, CellClassifier
from scnapse.nn.classifier import expected_calibration_error, fit_temperature

FAST = {"max_epochs": 30, "batch_size": 64, "progress": False, "seed": 0}


def _split(adata: AnnData, key: str, test_fraction: float = 0.25, seed: int = 0):
    """Stratified ref / query split (copies)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(adata.n_obs, dtype=bool)
    for c in adata.obs[key].unique():
        members = np.flatnonzero((adata.obs[key] == c).to_numpy())
        test[rng.choice(members, max(1, int(round(len(members) * test_fraction))), replace=False)] = True
    return adata[~test].copy(), adata[test].copy()


@pytest.fixture(scope="module")
def synthetic():
    adata = make_counts(n_obs=400, n_vars=60, n_types=4, seed=3)
    ref, query = _split(adata, "cell_type")
    model = sn.tl.train_classifier(ref, labels_key="cell_type", hidden=(32,), **FAST)
    return ref, query, model


@pytest.fixture(scope="module")
def pbmc68k_model():
    adata = sn.datasets.pbmc68k()
    ref, query = _split(adata, "bulk_labels")
    # no dropout and no early stopping: an over-confident network, for calibration to correct
    model = sn.tl.train_classifier(ref, labels_key="bulk_labels", progress=False, seed=0, max_epochs=30,
                                   dropout=0.0, early_stopping=0, batch_size=64)
    return ref, query, model


# -- it learns ---------------------------------------------------------------------------------
def test_learns_synthetic(synthetic):
    ref, query, model = synthetic
    pred = model.predict(query)
    acc = np.mean(pred == query.obs["cell_type"].astype(str).to_numpy())
    assert acc > 0.9  # chance is ~0.25
    assert model.metrics["accuracy"] > 0.8
    assert set(model.classes) == set(ref.obs["cell_type"].astype(str))


@pytest.mark.slow
def test_learns_pbmc68k_and_writes_uns(pbmc68k_model):
    ref, query, model = pbmc68k_model
    truth = query.obs["bulk_labels"].astype(str).to_numpy()
    pred = model.predict(query)
    acc = np.mean(pred == truth)
    majority = query.obs["bulk_labels"].value_counts(normalize=True).iloc[0]
    assert acc > 0.7 and acc > majority + 0.3, acc
    rec = ref.uns["classifier"]
    for key in ("accuracy", "macro_f1", "per_class_f1", "confusion_matrix", "ece_before", "ece_after", "temperature"):
        assert key in rec["metrics"]
    assert rec["metrics"]["macro_f1"] > 0.5
    cm = np.asarray(rec["metrics"]["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == rec["params"]["n_validation"]
    assert rec["params"]["input"] == "counts" and rec["params"]["seed"] == 0
    assert rec["params"]["cost"] == "cross_entropy" and "environment" in rec["params"]
    assert len(rec["history"]["train_loss"]) >= 1


@pytest.mark.slow
def test_learns_pbmc160():
    adata = sn.datasets.pbmc160()
    ref, query = _split(adata, "cell_type")
    model = sn.tl.train_classifier(ref, labels_key="cell_type", progress=False, seed=0, max_epochs=20)
    acc = np.mean(model.predict(query) == query.obs["cell_type"].astype(str).to_numpy())
    assert acc > 0.6, acc  # 8 balanced classes: chance 0.125


# -- calibration -------------------------------------------------------------------------------
@pytest.mark.slow
def test_temperature_scaling_lowers_ece(pbmc68k_model):
    _, query, model = pbmc68k_model
    m = model.metrics
    assert m["temperature"] > 1.2  # it was over-confident
    assert m["ece_after"] < m["ece_before"]  # on the validation cells it was fitted on
    # and on cells it never saw
    logits = torch.cat([chunk for _, chunk, _ in model.iter_scores(query)])
    y = torch.as_tensor([model.classes.index(c) for c in query.obs["bulk_labels"].astype(str)])
    raw = expected_calibration_error(torch.softmax(logits, 1), y)
    calibrated = expected_calibration_error(torch.softmax(logits / m["temperature"], 1), y)
    assert calibrated < raw


def test_fit_temperature_recovers_overconfidence():
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=gen) * 2
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=gen).squeeze(1)
    t = fit_temperature(true_logits * 3, y)  # over-confident by 3×
    assert 2.5 < t < 3.5
    before = expected_calibration_error(torch.softmax(true_logits * 3, 1), y)
    after = expected_calibration_error(torch.softmax(true_logits * 3 / t, 1), y)
    assert after < before / 2


# -- annotate ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_annotate_writes_keys_and_copy_leaves_input(pbmc68k_model):
    _, query, model = pbmc68k_model
    before = query.copy()
    out = sn.tl.annotate(query, model, copy=True)
    assert "predicted" not in query.obs and "predicted_probabilities" not in query.obsm
    assert (query.X != before.X).nnz == 0
    obs = out.obs["predicted"]
    assert isinstance(obs.dtype, pd.CategoricalDtype) and UNASSIGNED in obs.cat.categories
    probs = out.obsm["predicted_probabilities"]
    assert list(probs.columns) == model.classes and list(out.uns["predicted"]["classes"]) == model.classes
    np.testing.assert_allclose(probs.to_numpy().sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(out.obs["predicted_confidence"], probs.to_numpy().max(1), rtol=1e-6)
    assert ((out.obs["predicted_typicality"] > 0) & (out.obs["predicted_typicality"] <= 1)).all()
    assert sn.tl.annotate(query, model) is None and "predicted" in query.obs
    # every cell below a confidence of 1 is Unassigned; with 0 none is
    strict = sn.tl.annotate(query, model, min_confidence=1.0, min_typicality=0, key_added="s", copy=True)
    assert (strict.obs["s"] == UNASSIGNED).mean() > 0.9
    lax = sn.tl.annotate(query, model, min_confidence=0, min_typicality=0, key_added="l", copy=True)
    assert (lax.obs["l"] != UNASSIGNED).all()
    np.testing.assert_array_equal(lax.obs["l"].astype(str), model.predict(query))


@pytest.mark.slow
def test_unassigned_for_a_cell_type_never_seen():
    adata = sn.datasets.pbmc68k()
    held = "CD19+ B"
    known = adata[adata.obs["bulk_labels"] != held].copy()
    known.obs["bulk_labels"] = known.obs["bulk_labels"].cat.remove_unused_categories()
    ref, test = _split(known, "bulk_labels")
    novel = adata[adata.obs["bulk_labels"] == held].copy()
    model = sn.tl.train_classifier(ref, labels_key="bulk_labels", progress=False, seed=0, max_epochs=25)
    sn.tl.annotate(novel, model)
    sn.tl.annotate(test, model)
    assert (novel.obs["predicted"] == UNASSIGNED).mean() > 0.6
    assert (test.obs["predicted"] == UNASSIGNED).mean() < 0.25
    assert novel.obs["predicted_typicality"].median() < test.obs["predicted_typicality"].median() / 10


def test_majority_voting_keeps_per_cell_labels(synthetic):
    _, query, model = synthetic
    query = query.copy()
    query.obs["clusters"] = pd.Categorical(query.obs["cell_type"].astype(str))
    sn.tl.annotate(query, model, majority_voting=True, over_clustering="clusters", min_confidence=0)
    mv = query.obs["predicted_majority_voting"].astype(str)
    for _, rows in query.obs.groupby("clusters", observed=True):
        assert rows["predicted_majority_voting"].nunique() == 1
        assert rows["predicted_majority_voting"].iloc[0] == rows["predicted"].astype(str).value_counts().index[0]
    assert "predicted" in query.obs and len(mv) == query.n_obs
    with pytest.raises(ValueError, match="over_clustering"):
        sn.tl.annotate(query, model, majority_voting=True)
    with pytest.raises(KeyError, match="nope"):
        sn.tl.annotate(query, model, majority_voting=True, over_clustering="nope")


# -- inputs: genes, counts vs log, dense vs sparse ---------------------------------------------
def test_gene_reordering_and_missing_genes(synthetic):
    _, query, model = synthetic
    p0 = model.predict_proba(query)
    perm = np.random.default_rng(0).permutation(query.n_vars)
    shuffled = query[:, perm].copy()
    np.testing.assert_allclose(model.predict_proba(shuffled), p0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(shuffled), model.predict(query))
    # extra genes the model does not know are ignored
    extra = AnnData(sparse.hstack([query.X, sparse.csr_matrix(np.ones((query.n_obs, 3)))]).tocsr(),
                    obs=query.obs, var=pd.DataFrame(index=[*query.var_names, "x1", "x2", "x3"]))
    np.testing.assert_allclose(model.predict_proba(extra), p0, rtol=1e-5, atol=1e-6)
    # a few missing genes: a warning that counts them
    with pytest.warns(UserWarning, match="5 of the classifier's 60 genes are missing"):
        model.predict_proba(query[:, 5:].copy())
    # most missing: refused, with the overlap
    with pytest.raises(ValueError, match="Only 20 of the classifier's 60 genes"):
        model.predict_proba(query[:, :20].copy())
    renamed = query.copy()
    renamed.var_names = [f"ENSG{i}" for i in range(renamed.n_vars)]
    with pytest.raises(ValueError, match="species"):
        sn.tl.annotate(renamed, model)


def test_counts_log_dense_and_sparse_queries_agree(synthetic):
    import scanpy as sc

    _, query, model = synthetic
    p_counts = model.predict_proba(query)
    dense = query.copy()
    dense.X = query.X.toarray()
    np.testing.assert_allclose(model.predict_proba(dense), p_counts, rtol=1e-4, atol=1e-5)
    log = query.copy()
    sc.pp.normalize_total(log, target_sum=1e4)
    sc.pp.log1p(log)
    np.testing.assert_allclose(model.predict_proba(log), p_counts, rtol=1e-3, atol=1e-4)
    assert model.query_input == "log-normalised"
    # a model trained on log data labels counts the same way
    ref = make_counts(n_obs=200, n_vars=60, n_types=4, seed=3)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    log_model = CellClassifier(hidden=(32,), seed=0, max_epochs=20).fit(ref, labels_key="cell_type", progress=False)
    assert log_model.input_kind == "log-normalised"
    np.testing.assert_allclose(log_model.predict_proba(query), log_model.predict_proba(log), rtol=1e-3, atol=1e-4)


def test_scaled_model_and_class_balance_options(synthetic):
    ref, query, _ = synthetic
    for opts in ({"scale": True}, {"class_balance": "sampling"}, {"class_balance": "none"}):
        m = CellClassifier(hidden=(16,), seed=0, max_epochs=10, **opts).fit(ref, labels_key="cell_type", progress=False)
        assert np.mean(m.predict(query) == query.obs["cell_type"].astype(str).to_numpy()) > 0.8, opts
    dense = query.copy()
    dense.X = query.X.toarray()
    np.testing.assert_allclose(m.predict_proba(dense), m.predict_proba(query), rtol=1e-4, atol=1e-5)


def test_train_classifier_class_weight_and_its_old_name(synthetic):
    ref, _, _ = synthetic
    opts = {"hidden": (16,), **FAST, "max_epochs": 3}
    for weight, balance in (("balanced", "weights"), ("sampling", "sampling"), (None, "none")):
        new = sn.tl.train_classifier(ref.copy(), labels_key="cell_type", class_weight=weight, **opts)
        with pytest.warns(FutureWarning, match=f"class_balance={balance!r} is now class_weight={weight!r}"):
            old = sn.tl.train_classifier(ref.copy(), labels_key="cell_type", class_balance=balance, **opts)
        assert new.history.train_loss == old.history.train_loss  # the same training
    assert sn.tl.train_classifier(ref.copy(), labels_key="cell_type", class_weight=None, **opts).history.train_loss \
        != sn.tl.train_classifier(ref.copy(), labels_key="cell_type", **opts).history.train_loss
    with pytest.raises(ValueError, match="class_weight='smote'.*balanced"):
        sn.tl.train_classifier(ref, labels_key="cell_type", class_weight="smote", **opts)
    with pytest.raises(ValueError, match="class_balance='smote'"):
        sn.tl.train_classifier(ref, labels_key="cell_type", class_balance="smote", **opts)
    with pytest.raises(TypeError, match="class_weight= only"):
        sn.tl.train_classifier(ref, labels_key="cell_type", class_weight=None, class_balance="none", **opts)


def test_same_seed_same_numbers(synthetic):
    ref, query, model = synthetic
    opts = {**FAST, "max_epochs": 8}
    first = sn.tl.train_classifier(ref.copy(), labels_key="cell_type", hidden=(32,), **opts)
    again = sn.tl.train_classifier(ref.copy(), labels_key="cell_type", hidden=(32,), **opts)
    np.testing.assert_array_equal(again.predict_proba(query), first.predict_proba(query))
    other = sn.tl.train_classifier(ref.copy(), labels_key="cell_type", hidden=(32,), **{**opts, "seed": 1})
    assert not np.array_equal(other.predict_proba(query), first.predict_proba(query))


def test_train_options_reach_the_engine(synthetic):
    ref, _, _ = synthetic
    m = CellClassifier(hidden=(8, 8), activation="tanh", dropout=0.0, batch_norm=True, optimizer="sgd", lr=0.05,
                       l1=1e-5, l2=1e-4, input_noise=0.1, max_epochs=3, early_stopping=0, seed=0)
    m.fit(ref, labels_key="cell_type", progress=False)
    assert len(m.history.epoch) == 3
    assert any(isinstance(x, torch.nn.BatchNorm1d) for x in m.module.modules())
    assert any(isinstance(x, torch.nn.Tanh) for x in m.module.modules())
    assert m.params["optimizer"] == "sgd" and m.params["l1"] == 1e-5


# -- save / load -------------------------------------------------------------------------------
def test_save_load_round_trip(synthetic, tmp_path):
    _, query, model = synthetic
    path = model.save(tmp_path / "clf")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["kind"] == "CellClassifier" and cfg["classes"] == model.classes
    assert cfg["var_names"] == list(model.var_names) and cfg["input_kind"] == "counts"
    loaded = CellClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(query), model.predict_proba(query))
    a = sn.tl.annotate(query, model, copy=True)
    b = sn.tl.annotate(query, str(path), copy=True)  # a path, as pipeline files give it
    np.testing.assert_array_equal(a.obs["predicted"].astype(str), b.obs["predicted"].astype(str))
    np.testing.assert_array_equal(a.obs["predicted_typicality"], b.obs["predicted_typicality"])
    assert loaded.metrics["macro_f1"] == pytest.approx(model.metrics["macro_f1"])
    b.write_h5ad(tmp_path / "annotated.h5ad")  # everything written is storable


def test_load_refuses_what_is_not_a_classifier(synthetic, tmp_path):
    _, _, model = synthetic
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="not a scnapse model"):
        CellClassifier.load(tmp_path / "junk")
    path = model.save(tmp_path / "clf")
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = 999
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Upgrade scnapse"):
        CellClassifier.load(path)
    cfg["format_version"] = 1
    del cfg["classes"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="incompatible"):
        CellClassifier.load(path)
    ae = sn.models.Autoencoder(2, hidden=(4,), max_epochs=1, seed=0).fit(make_counts(40, 10), progress=False)
    ae.save(tmp_path / "ae")
    with pytest.raises(ValueError, match="Autoencoder model"):
        CellClassifier.load(tmp_path / "ae")
    with pytest.raises(FileNotFoundError):
        sn.tl.annotate(make_counts(10, 10), str(tmp_path / "missing"))


# -- bad input ---------------------------------------------------------------------------------
def test_bad_labels(counts_adata):
    with pytest.raises(KeyError, match="labels_key='nope'.*cell_type"):
        sn.tl.train_classifier(counts_adata, labels_key="nope", **FAST)
    a = counts_adata.copy()
    a.obs["n"] = np.linspace(0, 1, a.n_obs)  # measurements, not classes
    with pytest.raises(ValueError, match="non-integer numbers.*not classes"):
        sn.tl.train_classifier(a, labels_key="n", **FAST)
    # integer cluster ids are classes, in every family, named and ordered by value
    a.obs["cluster"] = a.obs["cell_type"].cat.codes.astype(int) * 10
    model = sn.tl.train_classifier(a, labels_key="cluster", hidden=(8,), **{**FAST, "max_epochs": 2})
    assert model.classes == [str(10 * i) for i in range(a.obs["cell_type"].cat.categories.size)]
    a.obs["lonely"] = a.obs["cell_type"].astype(str)
    a.obs.iloc[0, a.obs.columns.get_loc("lonely")] = "singleton"
    with pytest.raises(ValueError, match="singleton.*single labelled cell"):
        sn.tl.train_classifier(a, labels_key="lonely", **FAST)
    a.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least 2"):
        sn.tl.train_classifier(a, labels_key="one", **FAST)
    a.obs["gaps"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[:7, a.obs.columns.get_loc("gaps")] = np.nan
    with pytest.warns(UserWarning, match="7 of 120 cells have no label"):
        sn.tl.train_classifier(a, labels_key="gaps", hidden=(8,), **{**FAST, "max_epochs": 2})
    assert a.uns["classifier"]["params"]["n_labelled"] == 113


def test_bad_data_and_options(counts_adata, synthetic):
    with pytest.raises(ValueError, match="cross_entropy"):
        sn.tl.train_classifier(counts_adata, labels_key="cell_type", cost="mse")
    with pytest.raises(ValueError, match="cross_entropy"):
        CellClassifier(cost="nb")
    with pytest.raises(ValueError, match="class_balance"):
        CellClassifier(class_balance="smote")
    with pytest.raises(ValueError, match="Unknown option"):
        CellClassifier(epochs=3)
    scaled = counts_adata.copy()
    scaled.X = scaled.X.toarray() - 1.0
    with pytest.raises(ValueError, match="negative values"):
        sn.tl.train_classifier(scaled, labels_key="cell_type", log_normalize=True, **FAST)
    nan = counts_adata.copy()
    nan.X = nan.X.toarray()
    nan.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sn.tl.train_classifier(nan, labels_key="cell_type", **FAST)
    _, query, model = synthetic
    with pytest.raises(ValueError, match="no cells"):
        sn.tl.annotate(query[:0].copy(), model)
    with pytest.raises(ValueError, match="min_confidence"):
        sn.tl.annotate(query, model, min_confidence=2)
    with pytest.raises(TypeError, match="CellClassifier"):
        sn.tl.annotate(query, object())
    with pytest.raises(RuntimeError, match="not trained"):
        CellClassifier().predict(query)


# -- plot and pipeline -------------------------------------------------------------------------
@pytest.mark.slow
def test_confusion_matrix_plot(pbmc68k_model, tmp_path):
    _, query, model = pbmc68k_model
    q = sn.tl.annotate(query, model, copy=True)
    ax = sn.pl.confusion_matrix(q, "bulk_labels", "predicted", save=str(tmp_path / "cm.png"))
    table = ax.confusion
    assert table.to_numpy().sum() == q.n_obs
    assert list(table.index) == list(q.obs["bulk_labels"].cat.categories)
    assert (tmp_path / "cm.png").exists()
    with pytest.raises(KeyError, match="nope"):
        sn.pl.confusion_matrix(q, "nope", "predicted")


def test_annotate_runs_in_a_pipeline(synthetic, tmp_path):
    from scnapse.pipeline import Pipeline, get_step

    _, query, model = synthetic
    assert get_step("scnapse.tl.annotate").func is sn.tl.annotate
    model.save(tmp_path / "clf")
    query.write_h5ad(tmp_path / "query.h5ad")
    pipe = Pipeline.from_dict({
        "input": str(tmp_path / "query.h5ad"), "output": str(tmp_path / "out.h5ad"),
        "steps": [{"scnapse.tl.annotate": {"model": str(tmp_path / "clf"), "min_confidence": 0.3}}],
    })
    out = pipe.run()
    assert "predicted" in out.obs and out.uns["predicted"]["params"]["min_confidence"] == 0.3
