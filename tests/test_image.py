"""Image models: crops from labels, the CNNs, the steps, painting back, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import scnapse as sn
from scnapse.models.image import ImageModel
from scnapse.nn.cnn import CNNClassifierModule, ContrastiveModule, ConvAutoencoderModule, augment_batch, nt_xent

FAST = {"channels": (8, 16, 32), "progress": False, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- helpers ------------------------------------------------------------------------------------
def two_squares():
    """A 40×50 image: object 1 (a 6×6 square, value 10) in the middle, object 2 (4×4, value 50)
    touching the top-left corner; background 1."""
    image = np.ones((40, 50), dtype=np.float32)
    labels = np.zeros((40, 50), dtype=np.int32)
    labels[17:23, 22:28] = 1
    image[17:23, 22:28] = 10
    labels[0:4, 0:4] = 2
    image[0:4, 0:4] = 50
    return image, labels


@pytest.fixture(scope="module")
def texture_cells():
    """Striped vs speckled discs (same size, same intensity histogram); 20 annotated per class."""
    image, labels, classes = sn.im.synthetic_image(50, kind="texture", seed=7)
    cells = sn.im.cells_from_labels(image, labels, size=32)
    truth = classes[cells.obs["label"].to_numpy() - 1]
    rng = np.random.default_rng(0)
    annotation = np.full(cells.n_obs, np.nan, dtype=object)
    for c in np.unique(truth):
        annotation[rng.choice(np.flatnonzero(truth == c), 20, replace=False)] = c
    cells.obs["annotation"] = pd.Categorical(annotation)
    cells.obs["truth"] = truth
    return cells


@pytest.fixture(scope="module")
def texture_model(texture_cells):
    return sn.tl.train_image_classifier(texture_cells, labels_key="annotation", max_epochs=20, **FAST)


# -- crops --------------------------------------------------------------------------------------
def test_crops_positions_features_and_padding():
    image, labels = two_squares()
    cells = sn.im.cells_from_labels(image, labels, size=16, normalize="none")
    assert cells.n_obs == 2 and list(cells.obs["label"]) == [1, 2]
    assert list(cells.obs_names) == ["1", "2"]
    o = cells.obs.set_index("label")
    assert o.loc[1, "centroid_y"] == pytest.approx(19.5) and o.loc[1, "centroid_x"] == pytest.approx(24.5)
    assert o.loc[1, "area"] == 36 and o.loc[2, "area"] == 16
    assert o.loc[1, "mean_intensity_c0"] == pytest.approx(10) and o.loc[2, "mean_intensity_c0"] == pytest.approx(50)
    crops = cells.obsm["crops"]
    assert crops.shape == (2, 1, 16, 16) and crops.dtype == np.float32
    # object 1: centred (rounded centroid (20, 24) → window rows 12..27, cols 16..31)
    np.testing.assert_array_equal(crops[0, 0], image[12:28, 16:32])
    # object 2 at the corner: the window starts at (-6, -6): padded with zeros there
    assert (crops[1, 0, :6, :] == 0).all() and (crops[1, 0, :, :6] == 0).all()
    np.testing.assert_array_equal(crops[1, 0, 6:, 6:], image[0:10, 0:10])
    np.testing.assert_allclose(cells.obsm["spatial"][0], [24.5, 19.5])
    assert cells.uns["crops"]["size"] == 16 and cells.uns["crops"]["normalize"] == "none"
    assert not cells.obs["clipped"].any()


def test_normalisation_choices():
    image, labels = two_squares()
    img = sn.im.cells_from_labels(image, labels, size=16, normalize="image").obsm["crops"]
    assert img.min() >= 0 and img.max() <= 1
    lo, hi = np.percentile(image, [1, 99.8])
    np.testing.assert_allclose(img[0, 0], np.clip((image[12:28, 16:32] - lo) / (hi - lo), 0, 1), rtol=1e-5)
    crop = sn.im.cells_from_labels(image, labels, size=16, normalize="crop").obsm["crops"]
    assert crop[0].max() == pytest.approx(1.0) and crop[0].min() == pytest.approx(0.0)
    # per-crop: the brighter object 2 looks as bright as object 1
    assert crop[1].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalize='zscore'.*image"):
        sn.im.cells_from_labels(image, labels, size=16, normalize="zscore")


def test_masking_neighbours_and_background():
    image, labels = two_squares()
    labels[14:16, 20:30] = 3  # a neighbour just above object 1
    image[14:16, 20:30] = 7
    plain = sn.im.cells_from_labels(image, labels, size=16, normalize="none").obsm["crops"][0, 0]
    nb = sn.im.cells_from_labels(image, labels, size=16, normalize="none", mask="neighbors").obsm["crops"][0, 0]
    bg = sn.im.cells_from_labels(image, labels, size=16, normalize="none", mask="background").obsm["crops"][0, 0]
    win = labels[12:28, 16:32]
    assert (plain[win == 3] == 7).all() and (nb[win == 3] == 0).all()
    np.testing.assert_array_equal(nb[win != 3], plain[win != 3])
    np.testing.assert_array_equal(bg, np.where(win == 1, plain, 0))


def test_channels_axis_and_names():
    image, labels = two_squares()
    stack = np.stack([image, 2 * image], axis=0)
    first = sn.im.cells_from_labels(stack, labels, size=16, channel_axis=0, normalize="none",
                                    channel_names=["dna", "actin"])
    last = sn.im.cells_from_labels(np.moveaxis(stack, 0, -1), labels, size=16, channel_axis=-1, normalize="none")
    assert first.obsm["crops"].shape == (2, 2, 16, 16)
    np.testing.assert_array_equal(first.obsm["crops"], last.obsm["crops"])
    np.testing.assert_array_equal(first.obsm["crops"][:, 1], 2 * first.obsm["crops"][:, 0])
    assert first.obs["mean_intensity_actin"].iloc[0] == pytest.approx(20)
    with pytest.raises(ValueError, match="channel_axis"):
        sn.im.cells_from_labels(stack, labels, size=16)


def test_3d_projection_and_time_lapse():
    image, labels = two_squares()
    z_img = np.stack([image, 3 * image, 2 * image])  # (z, y, x)
    z_lab = np.stack([labels, labels, np.zeros_like(labels)])  # objects in z = 0, 1
    mx = sn.im.cells_from_labels(z_img, z_lab, size=16, normalize="none", projection="max")
    mid = sn.im.cells_from_labels(z_img, z_lab, size=16, normalize="none", projection="mid")
    assert mx.obs["area"].iloc[0] == 72 and "centroid_z" in mx.obs
    assert mx.obs["centroid_z"].iloc[0] == pytest.approx(0.5)
    # max over the object's z-range (slices 0 and 1), not the empty slice 2
    np.testing.assert_array_equal(mx.obsm["crops"][0, 0], 3 * image[12:28, 16:32])
    # mid: the slice through the centroid (z = round(0.5) = 0)
    np.testing.assert_array_equal(mid.obsm["crops"][0, 0], image[12:28, 16:32])

    t_lab = np.stack([labels, np.where(labels == 1, 1, 0)])  # frame 1 has only object 1
    t_img = np.stack([image, 2 * image])
    tl = sn.im.cells_from_labels(t_img, t_lab, size=16, normalize="none", time_axis=0)
    assert list(tl.obs["frame"]) == [0, 0, 1] and list(tl.obs_names) == ["t0_1", "t0_2", "t1_1"]
    np.testing.assert_array_equal(tl.obsm["crops"][2], 2 * tl.obsm["crops"][0])
    # painting back a time-lapse: label ids are per frame, so a frame must be chosen
    tl.obs["kind"] = pd.Categorical(["a", "b", "b"])
    with pytest.raises(ValueError, match="frame="):
        sn.im.class_table(tl, "kind")
    one = sn.im.class_table(tl, "kind", frame=1)
    assert list(one["label"]) == [1] and list(one["class"]) == ["b"] and list(one["class_id"]) == [2]
    painted = sn.im.paint_classes(t_lab[1], one)
    assert set(np.unique(painted)) == {0, 2} and (painted[t_lab[1] == 1] == 2).all()


def test_lazy_dask_input_matches_numpy():
    da = pytest.importorskip("dask.array")
    image, labels = two_squares()
    stack = np.stack([image, 2 * image], axis=0)  # (c, y, x)
    t_img = np.stack([stack, 3 * stack], axis=1)  # (c, t, y, x)
    t_lab = np.stack([labels, labels])  # (t, y, x)
    eager = sn.im.cells_from_labels(t_img, t_lab, size=16, channel_axis=0, time_axis=0)
    lazy = sn.im.cells_from_labels(da.from_array(t_img, chunks=(2, 1, 40, 50)), da.from_array(t_lab, chunks=(1, 40, 50)),
                                   size=16, channel_axis=0, time_axis=0)
    assert lazy.obsm["crops"].shape == (4, 2, 16, 16)
    np.testing.assert_array_equal(lazy.obsm["crops"], eager.obsm["crops"])
    pd.testing.assert_frame_equal(lazy.obs, eager.obs)


def test_crops_file_is_a_lazy_memory_map(tmp_path):
    image, labels = two_squares()
    labels[30:33, 40:43] = 5  # one more object, one too small for min_area
    labels[35, 45] = 6
    mem = sn.im.cells_from_labels(image, labels, size=16, min_area=2)
    disk = sn.im.cells_from_labels(image, labels, size=16, min_area=2, crops_file=tmp_path / "crops")
    assert isinstance(disk.obsm["crops"].base, np.memmap)  # a lazy view of the file, writable by write_h5ad
    assert list(disk.obs["label"]) == [1, 2, 5]
    np.testing.assert_array_equal(np.asarray(disk.obsm["crops"]), mem.obsm["crops"])
    np.testing.assert_array_equal(np.load(tmp_path / "crops.npy"), mem.obsm["crops"])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda i, l: (i[:, :-1], l), "shape.*must match"),
        (lambda i, l: (i, l.astype(np.float32)), "integer label image"),
        (lambda i, l: (i, l > 0), "boolean mask.*skimage.measure.label"),
        (lambda i, l: (i, np.zeros_like(l)), "no objects"),
        (lambda i, l: (i, l - 1), "negative"),
    ],
)
def test_bad_images_and_labels(make, match):
    image, labels = two_squares()
    image, labels = make(image, labels)
    with pytest.raises(ValueError, match=match):
        sn.im.cells_from_labels(image, labels, size=16)


def test_bad_crop_sizes():
    image, labels = two_squares()
    with pytest.raises(ValueError, match="at least 8"):
        sn.im.cells_from_labels(image, labels, size=6)
    with pytest.raises(ValueError, match="larger than the image"):
        sn.im.cells_from_labels(image, labels, size=48)
    with pytest.raises(ValueError, match="integer"):
        sn.im.cells_from_labels(image, labels, size=16.5)


@pytest.mark.parametrize("name", ["dsb2018", "bbbc007_a9", "bbbc007_20p1"])
def test_real_images(name):
    image, labels = sn.im.sample_image(name)
    cells = sn.im.cells_from_labels(image, labels, size=32)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    assert cells.n_obs == len(ids)
    np.testing.assert_array_equal(cells.obs["label"].to_numpy(), ids)
    np.testing.assert_array_equal(cells.obs["area"].to_numpy(), np.bincount(labels.ravel())[ids])
    means = [image[labels == i].mean() for i in ids[:5]]
    np.testing.assert_allclose(cells.obs["mean_intensity_c0"].to_numpy()[:5], means, rtol=1e-6)
    crops = cells.obsm["crops"]
    assert crops.shape == (len(ids), 1, 32, 32) and np.isfinite(crops).all()
    assert 0 <= crops.min() and crops.max() <= 1
    # a crop's centre pixel is (nearly always) on its own object
    cy = np.round(cells.obs["centroid_y"].to_numpy()).astype(int)
    cx = np.round(cells.obs["centroid_x"].to_numpy()).astype(int)
    assert (labels[cy, cx] == ids).mean() > 0.9


def test_real_images_end_to_end():
    """Two real BBBC007 images: crops, a contrastive embedding, a classifier on 10 annotated cells
    per plate, predictions painted back on one image's labels (mechanics on real data)."""
    import anndata as ad

    parts = []
    for name in ("bbbc007_a9", "bbbc007_20p1"):
        image, labels = sn.im.sample_image(name)
        part = sn.im.cells_from_labels(image, labels, size=32)
        part.obs["plate"] = name
        part.obs_names = [f"{name}_{i}" for i in part.obs_names]
        parts.append(part)
    cells = ad.concat(parts, uns_merge="first")
    assert cells.n_obs == 111 + 85 and cells.uns["crops"]["size"] == 32
    sn.tl.image_embedding(cells, method="contrastive", max_epochs=1, **FAST)
    assert cells.obsm["X_cnn"].shape == (196, 16) and np.isfinite(cells.obsm["X_cnn"]).all()
    annotation = cells.obs["plate"].astype(object).to_numpy().copy()
    annotation[np.r_[10:111, 121:196]] = np.nan
    cells.obs["annotation"] = pd.Categorical(annotation)
    model = sn.tl.train_image_classifier(cells, labels_key="annotation", max_epochs=2, **FAST)
    assert model.params["n_labelled"] == 20
    sn.tl.annotate_images(cells, model)
    a9 = cells[cells.obs["plate"] == "bbbc007_a9"]
    table = sn.im.class_table(a9, "predicted")
    painted = sn.im.paint_classes(sn.im.sample_image("bbbc007_a9")[1], table)
    assert set(np.unique(painted)) <= {0, 1, 2} and (painted > 0).sum() == a9.obs["area"].sum()


# -- networks and augmentation ------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 20, 32, 36])
def test_networks_take_any_crop_size(size):
    x = torch.rand(3, 2, size, size)
    ae = ConvAutoencoderModule(2, size, n_latent=5, channels=(4, 8, 8))
    res = ae(x)
    assert res["z"].shape == (3, 5) and res["out"].shape == x.shape
    clf = CNNClassifierModule(2, 3, channels=(4, 8))
    assert clf(x).shape == (3, 3) and clf.embed(x).shape == (3, 8)


def test_augmentation():
    x = torch.rand(16, 2, 12, 12)
    g = torch.Generator().manual_seed(0)
    geo = augment_batch(x, ("flip", "rot90"), generator=g)
    # flips and rotations move pixels, never change them
    for a, b in zip(x, geo):
        np.testing.assert_allclose(np.sort(a.numpy().ravel()), np.sort(b.numpy().ravel()))
    assert not torch.equal(geo, x)
    again = augment_batch(x, ("flip", "rot90"), generator=torch.Generator().manual_seed(0))
    assert torch.equal(geo, again)
    inten = augment_batch(x, ("intensity",), intensity=0.2, generator=g)
    ratio = (inten - inten.mean(dim=(2, 3), keepdim=True)).std() / (x - x.mean(dim=(2, 3), keepdim=True)).std()
    assert 0.75 < float(ratio) < 1.25 and not torch.allclose(inten, x)
    noisy = augment_batch(x, ("noise",), noise=0.1, generator=g)
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.2)
    assert torch.equal(augment_batch(x, ()), x)
    with pytest.raises(ValueError, match="blur"):
        augment_batch(x, ("blur",))


# -- classifier ---------------------------------------------------------------------------------
def test_classifier_learns_texture_from_20_cells_per_class(texture_cells, texture_model):
    # training read the cells and wrote nothing into them
    assert "predicted" not in texture_cells.obs and set(texture_cells.obsm.keys()) == {"crops", "spatial", "features"}
    cells = texture_cells.copy()
    sn.tl.annotate_images(cells, texture_model)
    held_out = cells.obs["annotation"].isna().to_numpy()
    assert held_out.sum() == 60
    pred = cells.obs["predicted"].astype(str).to_numpy()
    accuracy = (pred[held_out] == cells.obs["truth"].to_numpy()[held_out]).mean()
    assert accuracy >= 0.95, accuracy
    # every annotate* step: the classes and "Unassigned" (min_confidence=0 here: none), a
    # probability table with one column per class
    assert list(cells.obs["predicted"].cat.categories) == ["speckled", "striped", "Unassigned"]
    assert (pred != "Unassigned").all()
    proba = cells.obsm["predicted_probabilities"]
    assert list(proba.columns) == ["speckled", "striped"] and (proba.index == cells.obs_names).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(cells.obs["predicted_confidence"], proba.max(axis=1), rtol=1e-6)
    threshold = float(np.median(cells.obs["predicted_confidence"]))
    strict = sn.tl.annotate_images(cells, texture_model, min_confidence=threshold, key_added="strict", copy=True)
    unassigned = (strict.obs["strict"] == "Unassigned").to_numpy()
    np.testing.assert_array_equal(unassigned, strict.obs["strict_confidence"].to_numpy() < threshold)
    assert unassigned.any() and strict.uns["strict"]["params"]["min_confidence"] == threshold
    p = texture_model.params
    assert p["n_labelled"] == 40 and p["augment"] == ["flip", "rot90", "intensity"]
    assert p["n_train"] + p["n_validation"] == 40 and p["seed"] == 0 and p["crop"]["size"] == 32


def test_paint_back_table_colours_and_image(texture_cells, texture_model):
    cells = texture_cells.copy()
    sn.tl.annotate_images(cells, texture_model, key_added="kind")
    table = sn.im.class_table(cells, "kind")
    assert list(table.index) == list(cells.obs["label"])
    assert set(table.columns) >= {"label", "class", "class_id", "color", "kind_confidence"}
    categories = list(cells.obs["kind"].cat.categories)
    assert categories == ["speckled", "striped", "Unassigned"]
    assert table.attrs["colors"] == dict(zip(categories, cells.uns["kind_colors"]))
    assert table.attrs["colors"]["Unassigned"] == "#808080"  # grey, as unclassified objects
    colors = sn.im.label_colors(table)
    assert colors[0][3] == 0 and colors[None][3] == 0
    first = int(table["label"].iloc[0])
    np.testing.assert_allclose(colors[first][:3], sn.im._paint.hex_to_rgba(table["color"].iloc[0])[:3])
    _, labels, _ = sn.im.synthetic_image(50, kind="texture", seed=7)
    painted = sn.im.paint_classes(labels, table)
    for _, row in table.iloc[:10].iterrows():
        assert (painted[labels == row["label"]] == row["class_id"]).all()
    assert (painted[labels == 0] == 0).all()
    # a user's annotation with unannotated cells: class_id 0, grey
    t2 = sn.im.class_table(cells, "annotation", palette={"speckled": "#000000", "striped": "#ffffff"})
    assert (t2["class_id"] == 0).sum() == 60 and set(t2.loc[t2["class_id"] == 0, "color"]) == {"#808080"}
    with pytest.raises(KeyError, match="annotate_images"):
        sn.im.class_table(cells, "missing")
    # embeddings and probabilities keyed by label id, for the Labels layer's features
    feats = sn.im.label_features(cells, obs_keys=["area", "kind"])
    assert list(feats.columns[:3]) == ["label", "area", "kind"]
    assert list(feats.index) == list(cells.obs["label"])
    np.testing.assert_array_equal(feats["kind_probabilities_1"], cells.obsm["kind_probabilities"]["striped"])
    assert not any(c.startswith("crops") for c in feats.columns)


def test_same_seed_same_model_and_save_load(texture_cells, tmp_path):
    kw = {**FAST, "max_epochs": 2, "validation_fraction": 0}
    a = sn.tl.train_image_classifier(texture_cells, labels_key="annotation", **kw)
    b = sn.tl.train_image_classifier(texture_cells, labels_key="annotation", **kw)
    pa = a.predict_proba(texture_cells)
    np.testing.assert_array_equal(pa, b.predict_proba(texture_cells))
    c = sn.tl.train_image_classifier(texture_cells, labels_key="annotation", **{**kw, "seed": 1})
    assert not np.array_equal(pa, c.predict_proba(texture_cells))

    a.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["classes"] == ["speckled", "striped"]
    assert meta["crop"]["size"] == 32 and meta["crop"]["n_channels"] == 1 and meta["crop"]["normalize"] == "image"
    loaded = ImageModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(texture_cells), pa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.transform(texture_cells), a.transform(texture_cells), rtol=1e-5, atol=1e-6)
    assert loaded.history.epoch == [1, 2] and loaded.params["n_validation"] == 0
    # annotate_images takes the saved folder as well as the model
    by_path = sn.tl.annotate_images(texture_cells, str(tmp_path / "m"), copy=True)
    by_model = sn.tl.annotate_images(texture_cells, a, copy=True)
    assert (by_path.obs["predicted"] == by_model.obs["predicted"]).all()
    assert by_path.uns["predicted"]["params"]["model"] == str(tmp_path / "m")
    with pytest.raises(TypeError, match="ImageModel or the folder"):
        sn.tl.annotate_images(texture_cells, object())
    with pytest.raises(ValueError, match="Autoencoder"):
        sn.models.Autoencoder.load(tmp_path / "m")


def test_prediction_refuses_other_crops(texture_model):
    image, labels, _ = sn.im.synthetic_image(4, seed=1)
    wrong_size = sn.im.cells_from_labels(image, labels, size=24)
    with pytest.raises(ValueError, match="size=32"):
        texture_model.predict(wrong_size)
    wrong_norm = sn.im.cells_from_labels(image, labels, size=32, normalize="crop")
    with pytest.raises(ValueError, match="normalize='image'"):
        sn.tl.annotate_images(wrong_norm, texture_model)
    with pytest.raises(KeyError, match="cells_from_labels"):
        texture_model.predict(wrong_size, crops_key="nope")


def test_classifier_bad_input(texture_cells):
    cells = texture_cells.copy()
    with pytest.raises(KeyError, match="not a column"):
        sn.tl.train_image_classifier(cells, labels_key="nope", **FAST)
    one = cells.obs["annotation"].astype(object).where(cells.obs["annotation"] == "striped")
    cells.obs["one"] = one
    with pytest.raises(ValueError, match="at least 2"):
        sn.tl.train_image_classifier(cells, labels_key="one", **FAST)
    with pytest.raises(ValueError, match="blur"):
        sn.tl.train_image_classifier(cells, labels_key="annotation", augment=("blur",), **FAST)
    with pytest.raises(ValueError, match="cross_entropy"):
        sn.tl.train_image_classifier(cells, labels_key="annotation", cost="mse", **FAST)
    with pytest.raises(TypeError, match="Unknown option"):
        sn.tl.train_image_classifier(cells, labels_key="annotation", epochs=3, **FAST)
    with pytest.raises(TypeError, match="AnnData"):
        sn.tl.train_image_classifier(np.zeros((3, 1, 8, 8)), labels_key="x", **FAST)


# -- embedding ----------------------------------------------------------------------------------
def test_image_embedding_step_and_semi_supervised(texture_cells):
    cells = texture_cells.copy()
    before = cells.obsm["crops"].copy()
    out = sn.tl.image_embedding(cells, n_latent=6, max_epochs=3, copy=True, **FAST)
    assert "X_cnn" not in cells.obsm and "cnn" not in cells.uns
    np.testing.assert_array_equal(cells.obsm["crops"], before)
    assert out.obsm["X_cnn"].shape == (cells.n_obs, 6) and np.isfinite(out.obsm["X_cnn"]).all()
    rec = out.uns["cnn"]
    assert rec["params"]["task"] == "embed" and rec["params"]["cost"] == "mse" and rec["params"]["seed"] == 0
    losses = rec["history"]["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert sn.tl.image_embedding(cells, n_latent=6, max_epochs=1, key_added="X_ae", cost="bce", **FAST) is None
    assert cells.obsm["X_ae"].shape == (cells.n_obs, 6) and cells.uns["X_ae"]["params"]["cost"] == "bce"

    # semi-supervised: the classifier starts from an autoencoder trained on all cells
    ae = ImageModel("embed", n_latent=6, channels=(8, 16, 32), max_epochs=1, seed=0).fit(cells, progress=False)
    clf = ImageModel("classify", channels=(8, 16, 32), max_epochs=1, seed=0)
    clf.fit(cells, labels_key="annotation", pretrained=ae, progress=False)
    assert clf.params["pretrained"] is True
    other = ImageModel("classify", channels=(4, 8), max_epochs=1, seed=0)
    with pytest.raises(ValueError, match="same channels"):
        other.fit(cells, labels_key="annotation", pretrained=ae, progress=False)


def test_contrastive_embedding(texture_cells, tmp_path):
    # the cost: a view that matches its partner costs less than one that does not
    p = torch.randn(8, 4)
    assert nt_xent(p, p + 0.01).mean() < nt_xent(p, torch.randn(8, 4)).mean()
    assert nt_xent(p, p).shape == (8,)
    module = ContrastiveModule(1, 5, (4, 8))
    assert module.encode(torch.rand(3, 1, 20, 20)).shape == (3, 5)

    cells = texture_cells.copy()
    sn.tl.image_embedding(cells, method="contrastive", n_latent=5, max_epochs=2, **FAST)
    assert cells.obsm["X_cnn"].shape == (cells.n_obs, 5) and np.isfinite(cells.obsm["X_cnn"]).all()
    params = cells.uns["cnn"]["params"]
    assert params["method"] == "contrastive" and params["cost"] == "nt_xent"
    assert params["augment"] == ["flip", "rot90", "intensity", "noise"]
    model = ImageModel("embed", method="contrastive", n_latent=5, channels=(8, 16, 32), max_epochs=1, seed=0)
    model.fit(cells, progress=False)
    model.save(tmp_path / "c")
    again = ImageModel.load(tmp_path / "c")
    assert again.method == "contrastive"
    np.testing.assert_allclose(again.transform(cells), model.transform(cells), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not apply"):
        sn.tl.image_embedding(cells, method="contrastive", cost="mse", **FAST)
    with pytest.raises(ValueError, match="augment"):
        sn.tl.image_embedding(cells, method="contrastive", augment=(), **FAST)
    with pytest.raises(ValueError, match="method='simclr'"):
        sn.tl.image_embedding(cells, method="simclr", **FAST)


def test_embedding_bad_input():
    image, labels = two_squares()
    raw = sn.im.cells_from_labels(image, labels, size=16, normalize="none")
    with pytest.raises(ValueError, match="bce"):
        sn.tl.image_embedding(raw, cost="bce", **FAST)
    with pytest.raises(ValueError, match="image autoencoder"):
        sn.tl.image_embedding(raw, cost="nb", **FAST)
    raw.obsm["crops"] = raw.obsm["crops"][:, :, :, :8]
    with pytest.raises(ValueError, match="square"):
        sn.tl.image_embedding(raw, **FAST)


def test_image_embedding_runs_in_a_pipeline(tmp_path):
    from scnapse.pipeline import Pipeline, get_step

    assert get_step("scnapse.tl.image_embedding").func is sn.tl.image_embedding
    image, labels, _ = sn.im.synthetic_image(10, seed=2)
    sn.im.cells_from_labels(image, labels, size=16).write_h5ad(tmp_path / "cells.h5ad")
    pipe = Pipeline.from_dict({
        "input": str(tmp_path / "cells.h5ad"), "output": str(tmp_path / "out.h5ad"), "seed": 3,
        "steps": [{"scnapse.tl.image_embedding": {"n_latent": 4, "channels": [4, 8], "max_epochs": 1,
                                                  "progress": False}}],
    })
    out = pipe.run()
    assert out.obsm["X_cnn"].shape == (20, 4) and (tmp_path / "out.h5ad").exists()
    assert out.uns["cnn"]["params"]["seed"] == 3


def test_mark_classes_writes_the_clicked_classes_and_names_bad_ids():
    import anndata as ad
    import pandas as pd

    from scnapse.im import mark_classes

    cells = ad.AnnData(np.zeros((4, 1)), obs=pd.DataFrame({"label": [2, 5, 7, 9]}, index=list("abcd")))
    mark_classes(cells, classes={"small": [5], "large": [9, 2]})
    assert list(cells.obs["annotation"].cat.categories) == ["large", "small"]
    assert list(cells.obs["annotation"].astype(object).fillna("-")) == ["large", "small", "-", "large"]
    with pytest.raises(ValueError, match=r"label id\(s\) \[3\] are not cells"):
        mark_classes(cells, classes={"small": [3]})
    with pytest.raises(ValueError, match="marked both"):
        mark_classes(cells, classes={"small": [5], "large": [5]})
    with pytest.raises(KeyError, match="obs\\['label'\\]"):
        mark_classes(ad.AnnData(np.zeros((2, 1))), classes={"a": [1]})
