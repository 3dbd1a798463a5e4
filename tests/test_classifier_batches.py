"""The classifier's batch_key: per-batch centring for labels that hold across batches, errors,
the record in uns and in the saved model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import scnapse as sn
from scnapse.models.classifier import CellClassifier

FAST = {"hidden": (16,), "max_epochs": 5, "batch_size": 64, "progress": False, "seed": 0}


def _batches(n_per: int = 40, n_genes: int = 20, seed: int = 0) -> AnnData:
    """Three cell types in batches "a" and "b" (same composition); "b" is shifted along
    (type 1 − type 0), so a model without batch correction calls its type-0 cells type 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, size=(3, n_genes))
    shift = centres[1] - centres[0]
    rows, types, batches = [], [], []
    for batch, offset in (("a", 0.0), ("b", 1.0)):
        for t in range(3):
            rows.append(centres[t] + offset * shift + rng.normal(0, 0.7, size=(n_per, n_genes)))
            types += [f"type{t}"] * n_per
            batches += [batch] * n_per
    obs = pd.DataFrame({"cell_type": pd.Categorical(types), "batch": pd.Categorical(batches)})
    obs.index = obs.index.astype(str)
    return AnnData(np.vstack(rows).astype(np.float32), obs=obs,
                   var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))


@pytest.fixture(scope="module")
def data():
    adata = _batches()
    ref = adata[adata.obs["batch"] == "a"].copy()
    query = adata[adata.obs["batch"] == "b"].copy()
    return adata, ref, query


def _accuracy(query: AnnData, model) -> float:
    sn.tl.annotate(query, model, min_confidence=0.0, min_typicality=0.0)
    return float(np.mean(query.obs["predicted"].astype(str).to_numpy() == query.obs["cell_type"].astype(str).to_numpy()))


def test_batch_key_transfers_labels_to_a_shifted_batch(data):
    _, ref, query = data
    plain = sn.tl.train_classifier(ref, labels_key="cell_type", **FAST)
    centred = sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="batch", **FAST)
    without, with_key = _accuracy(query.copy(), plain), _accuracy(query.copy(), centred)
    assert with_key > 0.9
    assert with_key > without + 0.2
    scaled = sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="batch", batch_scale=True, **FAST)
    assert _accuracy(query.copy(), scaled) > 0.9


def test_typicality_in_the_centred_space(data):
    _, ref, query = data
    model = sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="batch", **FAST)
    q = query.copy()
    sn.tl.annotate(q, model)  # defaults: min_typicality 0.01
    # the shifted batch, once centred, is as typical as held-out reference cells (about 1 % below 0.01)
    assert float(np.mean(q.obs["predicted_typicality"] < 0.01)) < 0.1
    plain = sn.tl.train_classifier(ref, labels_key="cell_type", **FAST)
    q2 = query.copy()
    sn.tl.annotate(q2, plain)
    assert float(np.mean(q2.obs["predicted_typicality"] < 0.01)) > 0.5


def test_query_batches_each_centred(data):
    adata, ref, _ = data
    model = sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="batch", **FAST)
    both = adata.copy()
    sn.tl.annotate(both, model, min_confidence=0.0, min_typicality=0.0)  # the model's batch_key: a and b apart
    acc = np.mean(both.obs["predicted"].astype(str) == both.obs["cell_type"].astype(str))
    assert acc > 0.9
    assert list(both.uns["predicted"]["params"]["query_batches"]["batches"]) == ["a", "b"]
    one = adata.copy()
    one.obs = one.obs.rename(columns={"batch": "sample"})
    sn.tl.annotate(one, model, min_confidence=0.0, min_typicality=0.0)  # no such column: one batch
    assert list(one.uns["predicted"]["params"]["query_batches"]["batches"]) == ["(whole query)"]
    sn.tl.annotate(one, model, batch_key="sample", min_confidence=0.0, min_typicality=0.0)
    np.testing.assert_array_equal(one.obs["predicted"].to_numpy(), both.obs["predicted"].to_numpy())


def test_params_and_save_load_keep_batches(data, tmp_path):
    adata, _, query = data
    model = sn.tl.train_classifier(adata, labels_key="cell_type", batch_key="batch", batch_scale=True, **FAST)
    params = adata.uns["classifier"]["params"]
    assert params["batch_key"] == "batch" and params["batch_scale"] is True
    assert list(params["batch_categories"]) == ["a", "b"]
    model.save(tmp_path / "m")
    loaded = CellClassifier.load(tmp_path / "m")
    assert loaded.batch_key == "batch" and loaded.batch_scale and loaded.batch_categories == ["a", "b"]
    np.testing.assert_allclose(loaded.predict_proba(query), model.predict_proba(query), rtol=1e-5, atol=1e-6)
    assert "centred per 'batch'" in repr(loaded)


def test_batch_key_errors(data):
    adata, ref, query = data
    with pytest.raises(KeyError, match="not a column.*cell_type"):
        sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="donor", **FAST)
    bad = adata.copy()
    bad.obs["batch"] = bad.obs["batch"].astype(object)
    bad.obs.iloc[:3, bad.obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(ValueError, match="3 missing value"):
        sn.tl.train_classifier(bad, labels_key="cell_type", batch_key="batch", **FAST)
    lone = adata.copy()
    lone.obs["batch"] = lone.obs["batch"].astype(str)
    lone.obs.iloc[0, lone.obs.columns.get_loc("batch")] = "c"
    with pytest.raises(ValueError, match=r"single cell: \['c'\]"):
        sn.tl.train_classifier(lone, labels_key="cell_type", batch_key="batch", **FAST)
    model = sn.tl.train_classifier(ref, labels_key="cell_type", batch_key="batch", **FAST)
    with pytest.raises(KeyError, match="the query"):
        sn.tl.annotate(query.copy(), model, batch_key="donor")
    with pytest.raises(ValueError, match="single cell"):
        sn.tl.annotate(query[:1].copy(), model)
    plain = sn.tl.train_classifier(ref, labels_key="cell_type", **FAST)
    with pytest.warns(UserWarning, match="trained without batch_key"):
        sn.tl.annotate(query.copy(), plain, batch_key="batch")
    with pytest.raises(TypeError, match="batch_key"):
        CellClassifier(batch_key=3)
