"""Hand-made object features in cells_from_labels and the image classifier's feature path."""

import numpy as np
import pandas as pd
import pytest
import torch

import scnapse as sn
from scnapse.models import ImageModel

FAST = dict(channels=(4, 8), max_epochs=2, progress=False, seed=0, early_stopping=0)


def _annotated(kind="size", n_per_class=20, per_class=5, seed=0):
    img, lab, classes = sn.im.synthetic_image(n_per_class, kind=kind, seed=seed)
    cells = sn.im.cells_from_labels(img, lab, size=32)
    truth = classes[cells.obs["label"].to_numpy() - 1]
    cells.obs["truth"] = truth
    ann = np.full(cells.n_obs, np.nan, dtype=object)
    for c in np.unique(truth):
        ann[np.flatnonzero(truth == c)[:per_class]] = c
    cells.obs["annotation"] = ann
    return cells


def test_features_are_computed_for_a_2d_image():
    lab = np.zeros((40, 40), np.int32)
    lab[5:15, 5:25] = 1  # a 10 × 20 rectangle
    lab[25:35, 25:35] = 2  # a 10 × 10 square
    img = np.where(lab == 1, 2.0, 0.5)
    cells = sn.im.cells_from_labels(img, lab, size=16)
    names = cells.uns["crops"]["feature_names"]
    assert names == ["area", "perimeter", "eccentricity", "solidity", "extent", "major_axis_length",
                     "minor_axis_length", "intensity_mean_c0", "intensity_std_c0", "intensity_min_c0",
                     "intensity_max_c0"]
    f = pd.DataFrame(cells.obsm["features"], columns=names, index=cells.obs["label"])
    assert cells.obsm["features"].dtype == np.float32
    assert f.loc[1, "area"] == 200 and f.loc[2, "area"] == 100
    assert f.loc[1, "eccentricity"] > 0.5 > f.loc[2, "eccentricity"]
    assert f.loc[1, "solidity"] == pytest.approx(1.0) and f.loc[1, "extent"] == pytest.approx(1.0)
    assert f.loc[1, "major_axis_length"] > f.loc[1, "minor_axis_length"]
    assert f.loc[1, "intensity_mean_c0"] == pytest.approx(2.0) and f.loc[2, "intensity_max_c0"] == pytest.approx(0.5)
    assert f.loc[1, "intensity_std_c0"] == 0


def test_features_for_channels_3d_and_time_lapse():
    img, lab, _ = sn.im.synthetic_image(4, kind="size")
    two = sn.im.cells_from_labels(np.stack([img, 2 * img]), lab, size=16, channel_axis=0, channel_names=["a", "b"])
    assert two.obsm["features"].shape == (8, 7 + 8) and "intensity_max_b" in two.uns["crops"]["feature_names"]
    f = pd.DataFrame(two.obsm["features"], columns=two.uns["crops"]["feature_names"])
    np.testing.assert_allclose(f["intensity_mean_b"], 2 * f["intensity_mean_a"], rtol=1e-5)
    vol = sn.im.cells_from_labels(np.stack([img] * 3), np.stack([lab] * 3), size=16)
    flat = sn.im.cells_from_labels(img, lab, size=16)
    # 3-D: the area counts voxels, the other shape features come from the projected mask
    np.testing.assert_allclose(vol.obsm["features"][:, 0], 3 * flat.obsm["features"][:, 0])
    np.testing.assert_allclose(vol.obsm["features"][:, 1:], flat.obsm["features"][:, 1:], rtol=1e-5)
    movie = sn.im.cells_from_labels(np.stack([img, img]), np.stack([lab, lab]), size=16, time_axis=0)
    assert movie.obsm["features"].shape == (16, 11)


def test_logistic_path_alone_is_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    cells = _annotated(per_class=8)
    model = ImageModel("classify", class_weight=None, **{k: v for k, v in FAST.items() if k != "progress"})
    data = model._prepare(cells, device=torch.device("cpu"), labels_key="annotation")
    model.module = model._build(data, data.rows, 0)
    X = cells.obsm["features"].astype(np.float64)
    Xt = X[data.rows]
    std = Xt.std(0)
    std[std < 1e-8] = 1
    ref = LogisticRegression(C=1.0, max_iter=2000).fit((Xt - Xt.mean(0)) / std, data.labels.codes[data.rows])
    np.testing.assert_allclose(model.predict_proba(cells), ref.predict_proba((X - Xt.mean(0)) / std), atol=1e-4)


def test_features_beat_the_cnn_alone_at_5_cells_per_class():
    from sklearn.metrics import accuracy_score

    cells = _annotated(per_class=5)
    rest = cells.obs["annotation"].isna().to_numpy()
    acc = {}
    for features in ("features", None):
        model = sn.tl.train_image_classifier(cells, labels_key="annotation", features=features, **FAST)
        acc[features] = accuracy_score(cells.obs["truth"][rest], np.asarray(model.predict(cells))[rest])
    assert acc["features"] >= acc[None] and acc["features"] >= 0.9, acc


def test_baseline_keep_start_and_save_load(tmp_path):
    cells = _annotated(per_class=10)
    model = sn.tl.train_image_classifier(cells, labels_key="annotation", **FAST)
    b = model.baseline
    assert b["method"] == "random forest on regionprops features" and b["metric"] == "macro-F1"
    assert b["n"] == model.params["n_validation"] and 0 <= b["baseline_accuracy"] <= 1
    assert isinstance(model.params["kept_linear_start"], bool) and model.params["features"] == "features"
    assert model.params["feature_names"] == cells.uns["crops"]["feature_names"]
    model.save(tmp_path / "m")
    back = ImageModel.load(tmp_path / "m")
    assert back.features == "features" and back.linear_init and back.feature_names == model.feature_names
    np.testing.assert_array_equal(back.predict_proba(cells), model.predict_proba(cells))
    sn.tl.annotate_images(cells, back)
    assert cells.uns["predicted"]["baseline"]["method"] == b["method"]
    # new cells must bring the same features
    other = cells.copy()
    del other.obsm["features"]
    with pytest.raises(KeyError, match="features"):
        back.predict_proba(other)


def test_features_switch_and_missing_key():
    cells = _annotated(per_class=5)
    off = sn.tl.train_image_classifier(cells, labels_key="annotation", features=None, linear_init=True, **FAST)
    assert off.module.n_features == 0 and off.features is None and "kept_linear_start" not in off.params
    no_lr = sn.tl.train_image_classifier(cells, labels_key="annotation", linear_init=False, **FAST)
    assert no_lr.module.n_features == 11 and "kept_linear_start" not in no_lr.params
    old = cells.copy()
    del old.obsm["features"]
    fallback = sn.tl.train_image_classifier(old, labels_key="annotation", **FAST)  # the default: crops alone
    assert fallback.features is None and fallback.baseline is None
    with pytest.raises(KeyError, match="features='features'"):
        sn.tl.train_image_classifier(old, labels_key="annotation", features="features", **FAST)
    with pytest.raises(ValueError, match="features"):
        ImageModel("classify", features=3)

