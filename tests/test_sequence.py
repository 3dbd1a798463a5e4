"""Sequences: builders (tracks, Labels time-lapse, time courses), GRU/LSTM models, steps, bad input."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scnapse as sn
from scnapse.models import SequenceModel

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FAST = dict(progress=False, seed=0, validation_fraction=0, early_stopping=0)
OPTS = dict(seed=0, validation_fraction=0, early_stopping=0)  # for SequenceModel(...) (no progress)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tracks_table() -> pd.DataFrame:
    """3 tracks, rows shuffled: track 7 has a gap at frame 2, track 9 is one step long."""
    rows = [(5, t, 10.0 + t, 100.0 + 2 * t, "a") for t in range(5)]
    rows += [(7, t, 20.0 + t, 200.0, "b") for t in (0, 1, 3)]
    rows += [(9, 4, 30.0, 300.0, "a")]
    df = pd.DataFrame(rows, columns=["track_id", "frame", "intensity_mean", "volume", "group"])
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)


def held_out_last(adata, horizon):
    """The same sequences with the last ``horizon`` steps hidden, and those steps."""
    s = sn.ts.get_sequences(adata)
    L = s.lengths
    cut = adata.copy()
    cut.obs["length"] = L - horizon
    truth = np.stack([s.x[i, L[i] - horizon : L[i]] for i in range(s.n)])
    last = np.stack([np.repeat(s.x[i, L[i] - horizon - 1][None], horizon, 0) for i in range(s.n)])
    return cut, truth, last


# -- builders ---------------------------------------------------------------------------------------
def test_from_tracks_pads_sorts_and_records_gaps():
    seqs = sn.ts.from_tracks(tracks_table(), features=["intensity_mean", "volume"])
    assert list(seqs.obs_names) == ["5", "7", "9"]
    assert seqs.obsm["sequence"].shape == (3, 5, 2)
    assert seqs.obs["length"].tolist() == [5, 3, 1]
    np.testing.assert_allclose(seqs.obsm["sequence"][0, :, 0], 10 + np.arange(5))  # sorted by frame
    np.testing.assert_allclose(seqs.obsm["sequence"][1, :3, 0], [20, 21, 23])  # a gap is not invented
    assert (seqs.obsm["sequence"][1, 3:] == 0).all() and (seqs.obsm["sequence"][2, 1:] == 0).all()
    np.testing.assert_allclose(seqs.obsm["sequence_time"][1, :3], [0, 1, 3])
    assert seqs.obs["n_gaps"].tolist() == [0, 1, 0]
    assert seqs.obs["group"].tolist() == ["a", "b", "a"]  # constant per track → obs
    np.testing.assert_allclose(seqs.X[0], [12.0, 104.0])  # X = per-track mean
    assert list(seqs.var_names) == ["intensity_mean", "volume"]


def test_from_tracks_takes_napari_tracks_data():
    data = np.array([[1, 0, 5, 10, 10], [1, 1, 5, 11, 12], [2, 0, 3, 3, 3], [1, 2, 5, 12, 14]], dtype=float)
    seqs = sn.ts.from_tracks(data)
    assert seqs.obsm["sequence"].shape == (2, 3, 3)
    assert list(seqs.uns["sequence"]["features"]) == ["z", "y", "x"]
    np.testing.assert_allclose(seqs.obsm["sequence"][0, :, 2], [10, 12, 14])


def test_from_tracks_takes_a_tracks_layer_with_features():
    class TracksLayer:  # what napari.layers.Tracks offers: data and a features table
        data = np.array([[3, 0, 1.0, 1.0], [3, 1, 2.0, 2.0], [4, 0, 5.0, 5.0]])
        features = pd.DataFrame({"intensity": [10.0, 11.0, 50.0]})
        graph = {4: [3], 5: [3]}  # track 3 divides into 4 and 5 (5 is not in this small table)

    seqs = sn.ts.from_tracks(TracksLayer(), features=["intensity", "y"])
    np.testing.assert_allclose(seqs.obsm["sequence"][0], [[10, 1], [11, 2]])
    assert seqs.obs["length"].tolist() == [2, 1]
    assert seqs.obs["divides"].tolist() == [True, False] and seqs.obs["parent"].tolist() == [-1, 3]


def test_from_tracks_refuses_duplicates_nan_and_missing_columns():
    df = tracks_table()
    with pytest.raises(ValueError, match="more than one row at the same time point"):
        sn.ts.from_tracks(pd.concat([df, df.iloc[:1]]), features=["volume"])
    with pytest.raises(KeyError, match="not columns"):
        sn.ts.from_tracks(df, features=["area"])
    with pytest.raises(KeyError, match="track_key='cell'"):
        sn.ts.from_tracks(df, track_key="cell")
    bad = df.copy()
    bad.loc[(bad.track_id == 5) & (bad.frame == 2), "volume"] = np.nan
    with pytest.raises(ValueError, match="dropna=True"):
        sn.ts.from_tracks(bad, features=["volume"])
    seqs = sn.ts.from_tracks(bad, features=["volume"], dropna=True)
    assert seqs.obs["length"].tolist() == [4, 3, 1] and seqs.obs["n_gaps"].tolist() == [1, 1, 0]


def test_measure_tracks_on_a_labels_time_lapse():
    T = 3
    labels = np.zeros((T, 20, 20), dtype=np.int32)
    image = np.zeros((T, 20, 20), dtype=np.float32)
    for t in range(T):
        labels[t, 2 : 4 + t, 2:4] = 1  # grows: area 4, 6, 8
        image[t][labels[t] == 1] = 10.0 * (t + 1)
        labels[t, 10:12, 10 + t : 12 + t] = 2  # moves right
        image[t][labels[t] == 2] = 5.0
    df = sn.ts.measure_tracks(labels, image)
    one = df[df.track_id == 1].sort_values("frame")
    assert one["area"].tolist() == [4, 6, 8]
    np.testing.assert_allclose(one["intensity_mean"], [10, 20, 30])
    two = df[df.track_id == 2].sort_values("frame")
    np.testing.assert_allclose(two["centroid-x"], [10.5, 11.5, 12.5])
    seqs = sn.ts.from_tracks(df, features=["intensity_mean", "area"])
    assert seqs.obsm["sequence"].shape == (2, 3, 2)
    df3 = sn.ts.measure_tracks(labels[:, None], image[:, None], spacing=(2, 1, 1))
    assert "volume" in df3 and df3.loc[df3.track_id == 1, "volume"].tolist() == [8, 12, 16]
    with pytest.raises(ValueError, match="same time-lapse"):
        sn.ts.measure_tracks(labels, image[:2])


def test_real_tgmm_tracks():
    spots = sn.ts.read_mastodon_csv(SAMPLE / "tgmm-mini-spot.csv.gz")
    assert len(spots) == 3087  # the two unit rows under the header are gone
    with pytest.raises(ValueError, match="Branch spot ID"):  # a Mastodon track holds both daughters
        sn.ts.from_tracks(spots, features=["Spot intensity mean"], track_key="Spot track ID")
    seqs = sn.ts.from_tracks(spots, features=["Spot intensity mean", "Spot ellipsoid volume"],
                             track_key="Branch spot ID")
    assert seqs.n_obs == 212 and seqs.obsm["sequence"].shape == (212, 31, 2)
    assert int(seqs.obs["divides"].sum()) == 53
    layer = pd.read_csv(SAMPLE / "tgmm-mini-tracks-layer-data.csv.gz")
    napari_seqs = sn.ts.from_tracks(layer, track_key="label")
    assert napari_seqs.n_obs == 212 and int(napari_seqs.obs["length"].sum()) == 3087
    assert sorted(napari_seqs.obs["length"]) == sorted(seqs.obs["length"])


def test_from_timecourse_modes_on_hsmm():
    hsmm = ad.read_h5ad(SAMPLE / "hsmm_timecourse_2k.h5ad")
    genes = list(hsmm.var_names[:5])
    pseudo = sn.ts.from_timecourse(hsmm, time_key="Hours", n_pseudo=6, cells_per_step=8, genes=genes, seed=0)
    assert pseudo.obsm["sequence"].shape == (6, 4, 5)
    np.testing.assert_allclose(pseudo.obsm["sequence_time"][0], [0, 24, 48, 72])
    again = sn.ts.from_timecourse(hsmm, time_key="Hours", n_pseudo=6, cells_per_step=8, genes=genes, seed=0)
    np.testing.assert_array_equal(pseudo.obsm["sequence"], again.obsm["sequence"])
    summary = sn.ts.from_timecourse(hsmm, time_key="Hours", genes=genes)
    X = hsmm[:, genes].X.toarray()
    np.testing.assert_allclose(summary.obsm["sequence"][0, 1], X[pd.to_numeric(hsmm.obs["Hours"].astype(str)).to_numpy() == 24].mean(0), rtol=1e-5)
    subj = sn.ts.from_timecourse(hsmm, time_key="Hours", subject_key="Media", genes=genes)
    assert subj.n_obs == hsmm.obs["Media"].nunique()
    with pytest.raises(KeyError, match="subject_key"):
        sn.ts.from_timecourse(hsmm, time_key="Hours", subject_key="donor")
    with pytest.raises(ValueError, match="fewer cells"):
        sn.ts.from_timecourse(hsmm, time_key="Hours", n_pseudo=2, cells_per_step=500, genes=genes)


# -- models on synthetic dynamics -------------------------------------------------------------------
def test_classifier_tells_oscillation_frequencies_apart(tmp_path):
    train = sn.ts.simulate_oscillations(240, max_length=40, seed=0)
    test = sn.ts.simulate_oscillations(200, max_length=40, seed=1)
    model = sn.tl.train_sequence_classifier(train, labels_key="label", cell="lstm", bidirectional=True,
                                            hidden=(16,), max_epochs=12, lr=1e-2, batch_size=32, **FAST)
    sn.tl.annotate_sequences(test, model, key_added="pred")
    acc = (test.obs["pred"].astype(str) == test.obs["label"].astype(str)).mean()
    assert acc >= 0.95, acc
    assert test.obsm["pred_probabilities"].shape == (200, 2)
    assert ((test.obs["pred_confidence"] >= 0.5) & (test.obs["pred_confidence"] <= 1)).all()
    model.save(tmp_path / "clf")
    loaded = SequenceModel.load(tmp_path / "clf")
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-6)
    other = test.copy()
    sn.tl.annotate_sequences(other, str(tmp_path / "clf"))  # a saved folder works as the model
    assert (other.obs["predicted"] == test.obs["pred"]).all()  # the default key, as every annotate* step
    assert list(other.obs["predicted"].cat.categories) == [*model.classes, "Unassigned"]
    assert list(other.obsm["predicted_probabilities"].columns) == list(model.classes)
    assert other.uns["predicted"]["params"]["model"] == str(tmp_path / "clf")
    threshold = float(np.median(test.obs["pred_confidence"]))
    strict = sn.tl.annotate_sequences(test, model, key_added="strict", min_confidence=threshold, copy=True)
    unassigned = (strict.obs["strict"] == "Unassigned").to_numpy()
    np.testing.assert_array_equal(unassigned, strict.obs["strict_confidence"].to_numpy() < threshold)


def test_forecaster_beats_persistence_on_damped_oscillations(tmp_path):
    train = sn.ts.simulate_damped(120, length=30, seed=0)
    test = sn.ts.simulate_damped(60, length=30, seed=1)
    fc = sn.tl.train_forecaster(train, horizon=3, hidden=(16,), max_epochs=8, lr=1e-2, batch_size=128, **FAST)
    cut, truth, last = held_out_last(test, 3)
    sn.tl.forecast(cut, fc)
    assert cut.obsm["forecast"].shape == (60, 3, 1)
    rnn, persistence = ((cut.obsm["forecast"] - truth) ** 2).mean(), ((last - truth) ** 2).mean()
    assert rnn < 0.3 * persistence, (rnn, persistence)
    fc.save(tmp_path / "fc")
    np.testing.assert_allclose(SequenceModel.load(tmp_path / "fc").forecast(cut), cut.obsm["forecast"], atol=1e-6)


def _summary_reference(seqs):
    """Per feature mean, std, min, max, first, last, slope per step; then the length (numpy)."""
    s = sn.ts.get_sequences(seqs)
    rows = []
    for i in range(s.n):
        x = s.x[i, : s.lengths[i]].astype(np.float64)
        t = np.arange(len(x)) - (len(x) - 1) / 2
        slope = (t[:, None] * (x - x.mean(0))).sum(0) / max((t**2).sum(), 1e-12)
        rows.append(np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), x[0], x[-1], slope, [len(x)]]))
    S = np.array(rows)
    std = S.std(0)
    std[std < 1e-8] = 1
    return (S - S.mean(0)) / std


def test_sequence_classifier_starts_as_sklearn_logistic_regression():
    import torch
    from sklearn.linear_model import LogisticRegression

    seqs = sn.ts.simulate_oscillations(80, min_length=10, max_length=25, seed=4)
    model = SequenceModel("classify", hidden=(4,), **OPTS)
    data = model._prepare(seqs, device=torch.device("cpu"), labels_key="label")
    model.module = model._build(data, data.rows, 0)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(_summary_reference(seqs), data.labels.codes)
    np.testing.assert_allclose(model.predict_proba(seqs), ref.predict_proba(_summary_reference(seqs)), atol=1e-4)


def test_sequence_classifier_reports_random_forest_and_keeps_its_start(tmp_path):
    seqs = sn.ts.simulate_oscillations(120, min_length=15, max_length=30, seed=5)
    opts = dict(progress=False, seed=0, validation_fraction=0.3, early_stopping=0)
    clf = sn.tl.train_sequence_classifier(seqs, labels_key="label", hidden=(4,), max_epochs=2, lr=0.5, **opts)
    b = clf.baseline
    assert b["method"] == "random forest on summary features" and b["metric"] == "macro-F1" and b["n"] == 36
    assert isinstance(clf.params["kept_linear_start"], bool) and clf.params["linear_init"]
    clf.save(tmp_path / "clf")
    back = SequenceModel.load(tmp_path / "clf")
    assert back.linear_init
    np.testing.assert_allclose(back.predict_proba(seqs), clf.predict_proba(seqs), atol=1e-6)
    off = sn.tl.train_sequence_classifier(seqs, labels_key="label", hidden=(4,), max_epochs=1, linear_init=False,
                                          **opts)
    assert not off.module.linear and "kept_linear_start" not in off.params


def _ridge_ar_reference(seqs, mean, std, p, horizon):
    """Ridge AR(p) from sklearn on every one-step window (short histories repeat their first
    step), forecast recursively from each sequence's last p steps, in the data's units."""
    from sklearn.linear_model import Ridge

    s = sn.ts.get_sequences(seqs)
    z = [(s.x[i, : s.lengths[i]] - mean) / std for i in range(s.n)]

    def window(zi, t):
        idx = np.clip(np.arange(t - p, t), 0, None)
        return zi[idx].ravel()

    X = np.stack([window(zi, t) for zi in z for t in range(1, len(zi))])
    Y = np.stack([zi[t] for zi in z for t in range(1, len(zi))])
    ridge = Ridge(alpha=1.0).fit(X, Y)
    out = []
    for zi in z:
        hist = list(zi)
        for _ in range(horizon):
            hist.append(np.asarray(ridge.predict(window(np.array(hist), len(hist))[None])).reshape(-1))
        out.append(np.array(hist[len(zi):]) * std + mean)
    return np.stack(out)


def test_forecaster_starts_as_the_closed_form_ridge_ar():
    import torch

    seqs = sn.ts.simulate_damped(40, length=12, seed=3)
    model = SequenceModel("forecast", horizon=3, hidden=(4,), ar_order=4, **OPTS)
    data = model._prepare(seqs, device=torch.device("cpu"))
    model.module = model._build(data, data.rows, 0)
    ref = _ridge_ar_reference(seqs, model.mean.numpy(), model.std.numpy(), 4, 3)
    np.testing.assert_allclose(model.forecast(seqs), ref, rtol=1e-4, atol=1e-4)
    # switched off, the forecast starts from persistence plus a random recurrent output instead
    off = SequenceModel("forecast", horizon=3, hidden=(4,), linear_init=False, **OPTS)
    data = off._prepare(seqs, device=torch.device("cpu"))
    off.module = off._build(data, data.rows, 0)
    assert not np.allclose(off.forecast(seqs), ref, atol=1e-2)


def test_forecaster_keeps_its_start_and_refits_the_ar_path_on_every_sequence():
    seqs = sn.ts.simulate_damped(40, length=12, seed=3)
    # a learning rate too small to move: no epoch beats the start, which early stopping keeps;
    # the AR path is then fitted again on all the sequences, validation ones included
    fc = sn.tl.train_forecaster(seqs, horizon=3, hidden=(4,), ar_order=4, lr=1e-12, max_epochs=10,
                                early_stopping=2, validation_fraction=0.25, progress=False, seed=0)
    assert fc.history.best_epoch == 0 and fc.history.epoch == [1, 2] and fc.history.start_val_loss is not None
    assert fc.params["kept_linear_start"] and fc.params["ar_refit_sequences"] == 40
    assert fc.params["n_validation_sequences"] > 0
    assert fc.module.out.weight.abs().max().item() == 0.0  # the recurrent output is still zero
    ref = _ridge_ar_reference(seqs, fc.mean.numpy(), fc.std.numpy(), 4, 3)  # ridge AR on all 40
    np.testing.assert_allclose(fc.forecast(seqs), ref, rtol=1e-4, atol=1e-4)
    # the baseline was scored on the validation windows before the refit: network = AR there
    assert fc.baseline["network"] == pytest.approx(fc.baseline["baseline"], rel=1e-5)


def test_forecaster_reports_ar_and_persistence_and_never_ends_worse_than_its_start(tmp_path):
    seqs = sn.ts.simulate_damped(60, length=20, seed=2)
    opts = dict(progress=False, seed=0, validation_fraction=0.25, early_stopping=0)
    fc = sn.tl.train_forecaster(seqs, horizon=2, hidden=(4,), max_epochs=2, lr=0.5, **opts)  # a bad run
    b = fc.baseline
    assert b["method"] == "linear AR(8)" and not b["higher_is_better"] and b["n"] > 0
    assert b["persistence"] > b["baseline"]  # AR beats persistence on oscillations
    assert b["network"] <= b["baseline"] + 1e-9  # the start is kept where training did worse
    assert fc.params["linear_init"] and fc.params["kept_linear_start"] in (True, False)
    if fc.params["kept_linear_start"]:
        assert b["network"] == pytest.approx(b["baseline"], rel=1e-5)
    fc.save(tmp_path / "fc")
    back = SequenceModel.load(tmp_path / "fc")
    assert back.linear_init and back.ar_order == 8
    np.testing.assert_allclose(back.forecast(seqs), fc.forecast(seqs), atol=1e-6)


def test_embedding_groups_sequences_by_their_dynamics():
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    seqs = sn.ts.simulate_oscillations(200, min_length=20, max_length=30, seed=2)
    sn.tl.sequence_embedding(seqs, n_latent=8, hidden=(32,), max_epochs=30, batch_size=32, lr=1e-2, **FAST)
    y = seqs.obs["label"].to_numpy()
    knn = cross_val_score(KNeighborsClassifier(5), seqs.obsm["X_rnn"], y, cv=5).mean()
    level = cross_val_score(KNeighborsClassifier(5), seqs.X, y, cv=5).mean()  # per-sequence means
    assert knn >= 0.9 and level < 0.65, (knn, level)  # the frequency is in the code, not in the level


def test_embedding_is_reproducible_and_copy_leaves_input():
    seqs = sn.ts.simulate_oscillations(120, max_length=30, seed=2)
    before = seqs.copy()
    out = sn.tl.sequence_embedding(seqs, n_latent=4, hidden=(16,), max_epochs=4, batch_size=32, copy=True, **FAST)
    assert out.obsm["X_rnn"].shape == (120, 4) and np.isfinite(out.obsm["X_rnn"]).all()
    assert "X_rnn" not in seqs.obsm and seqs.obs.equals(before.obs)  # copy=True leaves the input alone
    assert out.uns["rnn"]["params"]["seed"] == 0 and len(out.uns["rnn"]["history"]["train_loss"]) == 4
    hist = out.uns["rnn"]["history"]["train_loss"]
    assert hist[-1] < hist[0]
    sn.tl.sequence_embedding(seqs, n_latent=4, hidden=(16,), max_epochs=4, batch_size=32, key_added="emb", **FAST)
    np.testing.assert_array_equal(seqs.obsm["emb"], out.obsm["X_rnn"])  # same seed, same numbers


# -- padding never leaks -----------------------------------------------------------------------------
def _with_garbage_padding(adata, value):
    out = adata.copy()
    x = out.obsm["sequence"].copy()
    L = out.obs["length"].to_numpy()
    for i in range(len(L)):
        x[i, L[i]:] = value
    out.obsm["sequence"] = x
    return out


@pytest.mark.parametrize("task", ["classify", "embed", "forecast"])
def test_padding_never_reaches_losses_or_predictions(task):
    seqs = sn.ts.simulate_oscillations(40, min_length=5, max_length=20, seed=3)
    opts = dict(hidden=(8,), max_epochs=2, batch_size=16, **OPTS)
    if task == "forecast":
        opts["horizon"] = 2
    garbage = _with_garbage_padding(seqs, 1e6)
    nans = _with_garbage_padding(seqs, np.nan)
    kw = {"labels_key": "label"} if task == "classify" else {}
    a = SequenceModel(task, **opts).fit(seqs, progress=False, **kw)
    b = SequenceModel(task, **opts).fit(garbage, progress=False, **kw)  # training: identical losses and weights
    assert a.history.train_loss == b.history.train_loss
    for k, v in a.module.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), b.module.state_dict()[k].numpy())
    predict = {"classify": a.predict_proba, "embed": a.transform, "forecast": a.forecast}[task]
    ref = predict(seqs)
    np.testing.assert_allclose(predict(garbage), ref, atol=1e-6)
    np.testing.assert_allclose(predict(nans), ref, atol=1e-6)
    # a sequence alone (no padding at all) gets what it gets inside a padded batch
    short = int(np.argmin(seqs.obs["length"]))
    np.testing.assert_allclose(predict(seqs[[short]].copy()), ref[[short]], atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_input_is_explained():
    seqs = sn.ts.simulate_oscillations(30, min_length=5, max_length=10, seed=4)
    with pytest.raises(KeyError, match="labels_key='divides'"):
        sn.tl.train_sequence_classifier(seqs, labels_key="divides", **FAST)
    with pytest.raises(ValueError, match="horizon=12 is too long"):
        sn.tl.train_forecaster(seqs, horizon=12, **FAST)
    ones = sn.ts.from_array(np.random.default_rng(0).normal(size=(10, 1, 2)))
    with pytest.raises(ValueError, match="length >= 2"):  # sequences of length 1 cannot train a forecaster
        sn.tl.train_forecaster(ones, horizon=1, **FAST)
    nan = seqs.copy()
    nan.obsm["sequence"] = nan.obsm["sequence"].copy()
    nan.obsm["sequence"][0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sn.tl.sequence_embedding(nan, **FAST)
    with pytest.raises(KeyError, match="obsm has no 'traces'"):
        sn.tl.sequence_embedding(seqs, sequence_key="traces", **FAST)
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        SequenceModel("forecast", bidirectional=True)
    with pytest.raises(ValueError, match="cell='rnn'"):
        SequenceModel("embed", cell="rnn")
    with pytest.raises(ValueError, match="Unknown option"):
        SequenceModel("embed", learning_rate=0.1)
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        one = seqs.copy()
        one.obs["label"] = "slow"
        sn.tl.train_sequence_classifier(one, labels_key="label", **FAST)
    fc = sn.tl.train_forecaster(seqs, horizon=2, hidden=(4,), max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="trained to forecast"):
        sn.tl.annotate_sequences(seqs, fc)
    renamed = seqs.copy()
    renamed.uns["sequence"] = {"features": ["a", "b"]}
    with pytest.raises(ValueError, match="lack the feature"):
        fc.forecast(renamed)


def test_irregular_steps_add_time_as_a_feature():
    df = tracks_table()
    df = pd.concat([df.assign(track_id=df.track_id + 100 * k, volume=df.volume + k) for k in range(4)])
    seqs = sn.ts.from_tracks(df, features=["intensity_mean", "volume"])
    model = SequenceModel("embed", hidden=(4,), n_latent=2, max_epochs=1, **OPTS).fit(seqs, progress=False)
    assert model.use_time_ and model.n_in == 3 and model.params["use_time"] is True
    regular = sn.ts.simulate_oscillations(20, seed=5)
    assert not SequenceModel("embed", hidden=(4,), n_latent=2, max_epochs=1, **OPTS).fit(regular, progress=False).use_time_


def test_sequence_steps_run_in_a_pipeline(tmp_path):
    from scnapse.pipeline import Pipeline

    seqs = sn.ts.simulate_oscillations(30, min_length=6, max_length=12, seed=6)
    fc = sn.tl.train_forecaster(seqs, horizon=2, hidden=(4,), max_epochs=1, **FAST)
    fc.save(tmp_path / "fc")
    pipe = Pipeline.from_dict({"steps": [
        {"scnapse.tl.sequence_embedding": {"n_latent": 2, "hidden": [4], "max_epochs": 1, "validation_fraction": 0}},
        {"scnapse.tl.forecast": {"model": str(tmp_path / "fc")}},  # a saved model by its folder
    ]})
    out = pipe.run(seqs, write=False)
    assert out.obsm["X_rnn"].shape == (30, 2)
    np.testing.assert_allclose(out.obsm["forecast"], fc.forecast(seqs), atol=1e-6)


def test_real_data_end_to_end():
    """tgmm-mini branches: classify divisions and forecast; HSMM pseudo-replicates: embed."""
    spots = sn.ts.read_mastodon_csv(SAMPLE / "tgmm-mini-spot.csv.gz")
    seqs = sn.ts.from_tracks(spots, features=["Spot intensity mean", "Spot ellipsoid volume"],
                             track_key="Branch spot ID")
    model = sn.tl.train_sequence_classifier(seqs, labels_key="divides", hidden=(8,), max_epochs=3,
                                            class_weight="balanced", **FAST)
    sn.tl.annotate_sequences(seqs, model, key_added="predicted_divides")
    assert set(seqs.obs["predicted_divides"].cat.categories) == {"False", "True", "Unassigned"}
    np.testing.assert_allclose(seqs.obsm["predicted_divides_probabilities"].sum(1), 1, rtol=1e-5)
    fc = sn.tl.train_forecaster(seqs, horizon=3, hidden=(8,), max_epochs=2, **FAST)
    sn.tl.forecast(seqs, fc)  # every branch, even those of one step
    assert seqs.obsm["forecast"].shape == (212, 3, 2) and np.isfinite(seqs.obsm["forecast"]).all()
    hsmm = ad.read_h5ad(SAMPLE / "hsmm_timecourse_2k.h5ad")
    hsmm.obsm["X_top"] = np.log1p(hsmm.X[:, :20].toarray())
    pseudo = sn.ts.from_timecourse(hsmm, time_key="Hours", n_pseudo=30, cells_per_step=5, use_rep="X_top")
    sn.tl.sequence_embedding(pseudo, n_latent=2, hidden=(8,), max_epochs=2, **FAST)
    assert pseudo.obsm["X_rnn"].shape == (30, 2)


def test_measure_tracks_on_real_tracked_labels():
    """The tgmm-mini Labels crop: centroids of the objects wholly inside the crop are those of
    the napari Tracks layer exported from the full volume."""
    crop = np.load(SAMPLE / "tgmm-mini-labels-crop.npz")
    labels, offset = crop["labels"], crop["offset_zyx"]
    df = sn.ts.measure_tracks(labels)
    assert {"track_id", "frame", "centroid-z", "centroid-y", "centroid-x", "volume"} <= set(df.columns)
    border = set()
    for t in range(labels.shape[0]):
        edge = np.concatenate([labels[t, :, [0, -1], :].ravel(), labels[t, :, :, [0, -1]].ravel()])
        border |= {(int(v), t) for v in np.unique(edge) if v}
    inside = df[[(int(i), int(t)) not in border for i, t in zip(df.track_id, df.frame)]]
    ref = pd.read_csv(SAMPLE / "tgmm-mini-tracks-layer-data.csv.gz")
    m = inside.merge(ref, left_on=["track_id", "frame"], right_on=["label", "frame"], suffixes=("", "_ref"))
    assert len(m) == len(inside) > 300
    for ax, off in zip("zyx", offset):
        np.testing.assert_allclose(m[f"centroid-{ax}"] + off, m[f"centroid-{ax}_ref"], atol=1e-6)
    seqs = sn.ts.from_tracks(df, features=["volume"])
    assert seqs.obsm["sequence"].shape[1] == 31


@pytest.mark.gpu
def test_sequence_models_train_on_the_gpu():
    seqs = sn.ts.simulate_oscillations(60, min_length=8, max_length=16, seed=7)
    opts = dict(hidden=(8,), max_epochs=2, batch_size=16, **FAST)
    for device in ("cpu", "auto"):
        fc = sn.tl.train_forecaster(seqs, horizon=2, device=device, **opts)
        clf = sn.tl.train_sequence_classifier(seqs, labels_key="label", device=device, **opts)
        out = sn.tl.forecast(seqs, fc, copy=True)
        sn.tl.annotate_sequences(out, clf)
        if device == "cpu":
            ref_fc, ref_p = out.obsm["forecast"], out.obsm["predicted_probabilities"].to_numpy()
    np.testing.assert_allclose(out.obsm["forecast"], ref_fc, atol=1e-2)
    np.testing.assert_allclose(out.obsm["predicted_probabilities"].to_numpy(), ref_p, atol=1e-2)


def test_plot_sequences_with_forecasts(tmp_path):
    seqs = sn.ts.simulate_damped(20, length=12, seed=8)
    fc = sn.tl.train_forecaster(seqs, horizon=2, hidden=(4,), max_epochs=1, **FAST)
    sn.tl.forecast(seqs, fc)
    seqs.obs["fast"] = np.where(seqs.obs["omega"] > 0.4, "fast", "slow")
    ax = sn.pl.sequences(seqs, n=5, color="fast", save=str(tmp_path / "seq.png"))
    assert len([ln for ln in ax.get_lines() if ln.get_xydata().size]) == 10  # 5 traces + 5 forecasts
    assert (tmp_path / "seq.png").exists()
    with pytest.raises(KeyError, match="feature='area'"):
        sn.pl.sequences(seqs, feature="area")
