"""Bad input: each case ends in a clear error (or warning, or is handled right), and the user's
AnnData is unchanged after every error."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from conftest import make_counts
from scipy import sparse

import scnapse as sn
from scnapse.models import Autoencoder, CellClassifier

FAST = {"max_epochs": 3, "progress": False, "seed": 0}


def snapshot(adata) -> dict:
    """What must not change when a step refuses its input."""
    X = adata.X
    X = X.toarray() if sparse.issparse(X) else (None if X is None else np.array(X))
    return {"X": X, "obs": adata.obs.copy(), "var": adata.var.copy(), "obsm": sorted(adata.obsm.keys()),
            "uns": sorted(adata.uns.keys()), "layers": sorted(adata.layers.keys()), "shape": adata.shape}


def assert_unchanged(adata, before: dict) -> None:
    after = snapshot(adata)
    if before["X"] is None:
        assert after["X"] is None
    else:
        np.testing.assert_array_equal(after["X"], before["X"])
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    for k in ("obsm", "uns", "layers", "shape"):
        assert after[k] == before[k], k


def refuses(call, adata, match: str, error=ValueError):
    before = snapshot(adata)
    with pytest.raises(error, match=match) as info:
        call(adata)
    assert_unchanged(adata, before)
    return info


@pytest.fixture(scope="module")
def counts():
    return make_counts(200, 40, seed=3)


@pytest.fixture(scope="module")
def classifier(counts):
    return CellClassifier(hidden=(16,), max_epochs=5, seed=0).fit(counts, labels_key="cell_type", progress=False)


@pytest.fixture(scope="module")
def autoencoder(counts):
    return Autoencoder(4, hidden=(16,), max_epochs=5, seed=0).fit(counts, progress=False)


# -- nothing to learn --------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, 3.0])
@pytest.mark.parametrize("which", ["autoencoder", "classifier"])
def test_constant_matrix_is_refused(value, which):
    adata = make_counts(60, 10)
    adata.X = np.full(adata.shape, value, dtype=np.float32)
    if which == "autoencoder":
        refuses(lambda a: sn.tl.autoencoder(a, n_latent=2, **FAST), adata, "nothing to learn")
    else:
        refuses(lambda a: sn.tl.train_classifier(a, labels_key="cell_type", **FAST), adata, "nothing to learn")


def test_cells_all_alike_are_refused():
    adata = make_counts(60, 10)
    adata.X = np.tile(np.arange(10, dtype=np.float32), (60, 1))  # every gene constant over the cells
    refuses(lambda a: sn.tl.autoencoder(a, n_latent=2, **FAST), adata, "every gene constant")


# -- sizes and widths through the public steps -------------------------------------------------
def test_n_latent_larger_than_genes_names_both():
    adata = make_counts(60, 8)
    refuses(lambda a: sn.tl.autoencoder(a, n_latent=12, **FAST), adata, r"n_latent=12 .*number of genes \(8\)")


@pytest.mark.parametrize("n_latent", [2.7, "10", True, 0])
def test_n_latent_must_be_a_whole_number(n_latent):
    adata = make_counts(60, 20)
    refuses(lambda a: sn.tl.autoencoder(a, n_latent=n_latent, **FAST), adata, "n_latent=.*whole number")


@pytest.mark.parametrize("step", ["autoencoder", "train_classifier"])
def test_hidden_as_a_string_is_refused(step):
    adata = make_counts(60, 20)
    kwargs = {"labels_key": "cell_type"} if step == "train_classifier" else {}
    refuses(lambda a: getattr(sn.tl, step)(a, hidden="128", **kwargs, **FAST), adata, "sequence of layer widths")


# -- the query's form, detected as the training data's was ------------------------------------
def _log_normalised(adata, target_sum=1e4):
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    return out


@pytest.mark.parametrize("target_sum", [1e4, None])
def test_autoencoder_on_counts_reads_log_normalised_cells(counts, autoencoder, target_sum):
    ref = autoencoder.transform(counts)
    got = autoencoder.transform(_log_normalised(counts, target_sum))
    assert autoencoder.query_input == "log-normalised"
    np.testing.assert_allclose(got, ref, atol=1e-4)
    normalised = counts.copy()
    sc.pp.normalize_total(normalised)
    np.testing.assert_allclose(autoencoder.transform(normalised), ref, atol=1e-4)
    assert autoencoder.query_input == "normalised"


def test_autoencoder_on_counts_refuses_what_it_cannot_convert(counts, autoencoder):
    subset = _log_normalised(counts)[:, :30].copy()  # log data of a gene subset: totals unknown
    subset.X = subset.X.toarray()
    before = snapshot(subset)
    with pytest.warns(UserWarning, match="missing"), pytest.raises(ValueError, match="trained on raw counts.*counts"):
        autoencoder.transform(subset)
    assert_unchanged(subset, before)


def test_autoencoder_on_log_data_reads_counts(counts):
    logged = _log_normalised(counts)
    model = Autoencoder(4, hidden=(16,), max_epochs=3, seed=0).fit(logged, progress=False)
    assert model.params["input_form"]["form"] == "log-normalised"
    np.testing.assert_allclose(model.transform(counts), model.transform(logged), atol=1e-4)
    other = _log_normalised(counts, 1e6)
    np.testing.assert_allclose(model.transform(other), model.transform(logged), atol=1e-4)


def test_classifier_on_counts_reads_normalised_only_query(counts, classifier):
    ref_p, ref_t = classifier.predict_scores(counts)
    normalised = counts.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    p, t = classifier.predict_scores(normalised)
    assert classifier.query_input == "normalised"
    np.testing.assert_allclose(p, ref_p, atol=1e-4)
    assert np.mean(np.abs(t - ref_t)) < 0.01  # an empirical p-value: a step may flip at a boundary
    p, _ = classifier.predict_scores(_log_normalised(counts, 1e6))  # another target sum
    np.testing.assert_allclose(p, ref_p, atol=1e-4)


def test_model_records_the_training_form_and_keeps_it_when_saved(counts, classifier, tmp_path):
    assert classifier.params["input_form"]["form"] == "counts"
    loaded = CellClassifier.load(classifier.save(tmp_path / "m"))
    assert loaded.params["input_form"]["form"] == "counts"
    np.testing.assert_allclose(loaded.predict_proba(_log_normalised(counts)), classifier.predict_proba(counts),
                               atol=1e-4)


# -- annotate: the user's own column -----------------------------------------------------------
def test_annotate_warns_before_replacing_the_users_column(counts, classifier):
    query = counts.copy()
    query.obs["predicted"] = "my labels"
    with pytest.warns(UserWarning, match=r"obs\['predicted'\].*key_added="):
        sn.tl.annotate(query, classifier)
    with warnings.catch_warnings():  # its own column, written before: replaced quietly
        warnings.simplefilter("error")
        sn.tl.annotate(query, classifier)


def test_annotate_batch_size_zero(counts, classifier):
    query = counts.copy()
    refuses(lambda a: sn.tl.annotate(a, classifier, batch_size=0), query, "batch_size=0")


# -- images ------------------------------------------------------------------------------------
def _squares():
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[5:15, 5:15], labels[22:34, 20:32] = 1, 2
    return image, labels


def test_nan_pixels_are_refused(tmp_path):
    image, labels = _squares()
    image[7, 7] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite pixel"):
        sn.im.cells_from_labels(image, labels, size=16)
    with pytest.raises(ValueError, match="NaN"):
        sn.im.cells_from_labels(image, labels, size=16, crops_file=tmp_path / "crops")
    assert not (tmp_path / "crops.npy").exists()


def test_cells_with_a_crops_file_can_be_written(tmp_path):
    image, labels = _squares()
    cells = sn.im.cells_from_labels(image, labels, size=16, crops_file=tmp_path / "crops")
    cells.write_h5ad(tmp_path / "cells.h5ad")
    back = ad.read_h5ad(tmp_path / "cells.h5ad")
    np.testing.assert_array_equal(back.obsm["crops"], np.load(tmp_path / "crops.npy"))


# -- files that are not what they should be ----------------------------------------------------
def test_checkpoint_dir_is_a_file(tmp_path):
    path = tmp_path / "ckpt"
    path.write_text("notes")
    adata = make_counts(60, 20)
    refuses(lambda a: sn.tl.autoencoder(a, n_latent=2, checkpoint_dir=path, **FAST), adata, "existing file")
    assert path.read_text() == "notes"


def test_save_onto_a_file(classifier, tmp_path):
    path = tmp_path / "model"
    path.write_text("notes")
    with pytest.raises(ValueError, match="existing file"):
        classifier.save(path)
    with pytest.raises(ValueError, match="cannot be created"):
        classifier.save(path / "inside")
    assert path.read_text() == "notes"


def test_truncated_h5ad(counts, tmp_path):
    path = tmp_path / "cells.h5ad"
    counts.write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot be read as an .h5ad"):
        sn.read_backed(path)


def _edit_config(folder, edit):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("which", ["classifier", "autoencoder"])
def test_config_without_a_key(which, classifier, autoencoder, tmp_path):
    model = classifier if which == "classifier" else autoencoder
    folder = model.save(tmp_path / "m")
    _edit_config(folder, lambda c: c.pop("architecture"))
    with pytest.raises(ValueError, match="architecture"):
        type(model).load(folder)


def test_config_with_fewer_classes_than_weights(counts, classifier, tmp_path):
    folder = classifier.save(tmp_path / "m")
    _edit_config(folder, lambda c: c.update(classes=c["classes"][:-1]))
    with pytest.raises(ValueError, match="classes"):
        CellClassifier.load(folder)
    folder = classifier.save(tmp_path / "a")
    _edit_config(folder, lambda c: c.update(var_names=c["var_names"][:-1]))
    with pytest.raises(ValueError, match="genes"):
        CellClassifier.load(folder)


def test_checkpoint_without_fingerprint(tmp_path):
    adata = make_counts(60, 20)
    from scnapse.train import checkpoint

    torch.save({"format": checkpoint.FORMAT, "format_version": 1, "epoch": 1}, tmp_path / checkpoint.FILE)
    refuses(lambda a: sn.tl.autoencoder(a, n_latent=2, checkpoint_dir=tmp_path, resume=True, **FAST), adata,
            "incomplete scnapse checkpoint")


# -- backed input ------------------------------------------------------------------------------
def test_copy_of_a_backed_anndata(counts, classifier, tmp_path):
    path = tmp_path / "cells.h5ad"
    counts.write_h5ad(path)
    backed = sn.read_backed(path)
    try:
        out = sn.tl.annotate(backed, classifier, copy=True)
        assert not out.isbacked and "predicted" in out.obs and "predicted" not in backed.obs
        emb = sn.tl.autoencoder(backed, n_latent=2, hidden=(8,), copy=True, **FAST)
        assert emb.obsm["X_autoencoder"].shape == (counts.n_obs, 2) and "X_autoencoder" not in backed.obsm
    finally:
        backed.file.close()


# -- the table: every public step and the CLI against hostile-but-realistic input --------------
# Each case is (step, argument, value, expected outcome). Outcomes: "error" (a ValueError,
# TypeError, KeyError or FileNotFoundError from scnapse that names the problem, never a torch or
# numpy traceback), "warning" (runs and warns) or "handled" (runs and does the right thing). The
# user's AnnData is fingerprinted before each call and compared after any error.

ONE = {"max_epochs": 1, "progress": False, "seed": 0}
BAD_INT = [0, -1, 2.7, "10", True, None, float("nan"), [4]]
BAD_WIDTHS = ["128", (0,), (-4,), (8.5,), ("a",), 16.5, [None]]
BAD_FLOAT = [-1.0, float("nan"), float("inf"), "0.5", None, 2.0]
BAD_KEY = ["missing", 3, ""]
BAD_EPOCHS = [0, -1, 1.5, "3", float("nan")]
BAD_BATCH = [0, -1, 2.5, "a", float("nan")]
BAD_LR = [0.0, -1.0, "x", float("nan"), float("inf")]
BAD_SEED = ["a", 1.5, -1]


_MODEL: dict = {}


def _model():
    """A classifier trained once (one epoch) for the annotate cases."""
    if "m" not in _MODEL:
        _MODEL["m"] = sn.tl.train_classifier(make_counts(60, 40, seed=3), labels_key="cell_type", hidden=(8,), **ONE)
    return _MODEL["m"]


def _ae(a, **kw):
    return sn.tl.autoencoder(a, **{"n_latent": 3, "hidden": (8,), **ONE, **kw})


def _clf(a, **kw):
    return sn.tl.train_classifier(a, **{"labels_key": "cell_type", "hidden": (8,), **ONE, **kw})


def _annotate(a, **kw):
    model = kw.pop("model", None) or _model()
    return sn.tl.annotate(a, model, **kw)


def _bad_data(kind: str):
    a = make_counts(60, 40, seed=3)
    X = (a.X.toarray() if sparse.issparse(a.X) else np.asarray(a.X)).astype(np.float32)
    if kind == "nan":
        X[3, 4] = np.nan
    elif kind == "inf":
        X[0, 0] = np.inf
    elif kind == "negative":
        X[1, 1] = -5
    elif kind == "zeros":
        X[:] = 0
    elif kind == "constant":
        X[:] = 2
    elif kind == "one_cell":
        return a[:1].copy()
    elif kind == "no_genes":
        return a[:, :0].copy()
    a.X = X
    return a


NOT_ANNDATA = {"None": None, "array": np.ones((5, 4)), "frame": pd.DataFrame(np.ones((5, 4))), "list": [[1, 2]],
               "path": "cells.h5ad", "dict": {"X": 1}, "int": 3, "set": {1}}
STEPS = ["annotate", "annotate_images", "annotate_sequences", "autoencoder", "compare_embeddings", "forecast",
         "image_embedding", "sequence_embedding", "train_classifier", "train_forecaster", "train_image_classifier",
         "train_sequence_classifier", "tune"]
BAD_DATA = ["nan", "inf", "negative", "zeros", "constant", "one_cell", "no_genes"]


def _cells(adata):
    return adata


def _table() -> list[tuple]:
    """(case id, what the call gets, the call) for every case."""
    cases = []
    for step, call in (("autoencoder", _ae), ("train_classifier", _clf)):
        for arg, values in (("hidden", BAD_WIDTHS), ("max_epochs", BAD_EPOCHS), ("batch_size", BAD_BATCH),
                            ("lr", BAD_LR), ("layer", BAD_KEY), ("seed", BAD_SEED)):
            cases += [(f"{step}-{arg}={v!r}", None, call, {arg: v}) for v in values]
    cases += [(f"autoencoder-n_latent={v!r}", None, _ae, {"n_latent": v}) for v in BAD_INT + [41, 1000]]
    cases += [(f"autoencoder-beta={v!r}", None, _ae, {"beta": v}) for v in BAD_FLOAT]
    cases += [(f"train_classifier-labels_key={v!r}", None, _clf, {"labels_key": v}) for v in BAD_KEY + ["n_genes"]]
    for arg, values in (("min_confidence", BAD_FLOAT), ("min_typicality", BAD_FLOAT), ("batch_size", BAD_BATCH),
                        ("key_added", [3, "", None]), ("layer", BAD_KEY), ("over_clustering", ["missing", 3]),
                        ("model", ["nope.pt", 3, "."])):
        cases += [(f"annotate-{arg}={v!r}", None, _annotate, {arg: v}) for v in values]
    for kind in BAD_DATA:
        for step, call in (("autoencoder", _ae), ("train_classifier", _clf), ("annotate", _annotate)):
            cases.append((f"{step}-data={kind}", kind, call, {}))
    for step in STEPS:
        required = {"labels_key": "cell_type"} if step.startswith(("train_", "compare")) else {}
        if step.startswith(("annotate", "forecast")):
            required = {"model": "model"}
        if step == "tune":
            required = {"step": "autoencoder", "space": {"lr": [1e-3, 1e-2]}}
        for name, value in NOT_ANNDATA.items():
            cases.append((f"{step}-adata={name}", ("given", value), getattr(sn.tl, step), required))
    return cases


CASES = _table()
# What runs: a valid value, an option that only applies with another one, and annotating cells
# whose values are all alike (a prediction is still defined). Every other case is a clear error.
HANDLED = {"autoencoder-beta=2.0", "annotate-over_clustering='missing'", "annotate-over_clustering=3",
           "annotate-data=zeros", "annotate-data=constant", "annotate-data=one_cell",
           "train_classifier-data=negative",  # real-valued features (z-scores, ΔCt) are standardised
           "autoencoder-data=negative"}  # and embedded (mse on the values as they are)
CLEAR = (ValueError, TypeError, KeyError, FileNotFoundError)
INTERNAL = ("Traceback", "torch.", "numpy.", "range() arg", "broadcast", "object of type")


def outcome_of(case_id: str) -> str:
    """The expected outcome class of a case: "error", "warning" or "handled"."""
    return "handled" if case_id in HANDLED else "error"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_table(case):
    case_id, data, call, kwargs = case
    kwargs = {k: (_model() if v == "model" and k == "model" else v) for k, v in kwargs.items()}
    if data is None:
        adata = make_counts(60, 40, seed=3)
    else:
        adata = data[1] if isinstance(data, tuple) else _bad_data(data)
    if outcome_of(case_id) == "handled":
        call(adata, **kwargs)
        return
    before = snapshot(adata) if isinstance(adata, ad.AnnData) else None
    with pytest.raises(CLEAR) as info:
        call(adata, **kwargs)
    message = str(info.value)
    assert len(message) > 15 and not any(m in message for m in INTERNAL), message
    if before is not None:
        assert_unchanged(adata, before)


def count_cases() -> dict:
    """Cases of this file by outcome: the table's, and the other tests' (each counted once per
    parametrised case; they check an error, a warning or a handled result)."""
    import collections
    import inspect as _inspect
    import sys

    counts = collections.Counter(outcome_of(c[0]) for c in CASES)
    module = sys.modules[__name__]
    for name, func in _inspect.getmembers(module, _inspect.isfunction):
        if not name.startswith("test_") or name in ("test_table", "test_the_suite_counts_its_cases"):
            continue
        marks = [m for m in getattr(func, "pytestmark", []) if m.name == "parametrize"]
        n = 1
        for m in marks:
            n *= len(m.args[1])
        counts["other tests"] += n
    return dict(counts)


def test_the_suite_counts_its_cases():
    counts = count_cases()
    assert sum(counts.values()) >= 250, counts
    assert counts["error"] >= 200 and counts["handled"] >= 1, counts


if __name__ == "__main__":
    print(count_cases())


@pytest.fixture(scope="module")
def batch_reference():
    a = sn.datasets.simulated_batches(200, n_genes=40, n_batches=3, n_cell_types=3, seed=0)
    ref = a[a.obs["batch"] != "batch2"].copy()
    model = Autoencoder(4, hidden=(8,), batch_key="batch", max_epochs=2, seed=0).fit(ref, progress=False)
    return model, a[a.obs["batch"] == "batch2"].copy()


@pytest.mark.parametrize("bad, match", [
    ({"max_epochs": 0}, "max_epochs=0 must be a whole number >= 1"),
    ({"max_epochs": 2.5}, "max_epochs=2.5 must be a whole number"),
    ({"batch_mmd": -1.0}, "batch_mmd=-1.0 must be a finite number >= 0"),
    ({"batch_mmd": "strong"}, "batch_mmd='strong' must be a number"),
    ({"init": "random"}, "init='random': choose 'mean'"),
    ({"lr": 0}, "lr=0.0 must be a number > 0"),
    ({"batch_size": 0}, "batch_size=0 must be a whole number"),
])
def test_map_query_refuses_bad_options(batch_reference, bad, match):
    model, query = batch_reference
    refuses(lambda q: sn.tl.map_query(q, model, **bad), query, match)


def test_map_query_refuses_reference_codes_of_the_wrong_shape(batch_reference):
    import copy

    model, query = batch_reference
    broken = copy.copy(model)
    broken.reference_codes = torch.zeros(10, 3)
    refuses(lambda q: sn.tl.map_query(q, broken), query, r"reference_codes has shape \(10, 3\)")
