"""Batch-aware autoencoder: conditioning on batches and covariates, query mapping."""

import numpy as np
import pytest
import scanpy as sc
import torch

import scnapse as sn

FAST = {"max_epochs": 3, "progress": False, "seed": 0}
MFAST = {"max_epochs": 3, "seed": 0}


@pytest.fixture(scope="module")
def batches():
    a = sn.datasets.simulated_batches(400, n_genes=120, n_batches=3, n_cell_types=4, seed=0)
    a.obs["pct_mito"] = np.random.default_rng(0).uniform(0, 10, a.n_obs)
    a.obs["donor"] = np.where(np.arange(a.n_obs) % 2, "d1", "d2")
    return a


def test_batch_aware_count_vae_records_and_embeds(batches):
    a = batches.copy()
    sn.tl.autoencoder(a, n_latent=6, hidden=(16,), batch_key="batch", categorical_covariate_keys=["donor"],
                      continuous_covariate_keys="pct_mito", **FAST)
    assert a.obsm["X_autoencoder"].shape == (a.n_obs, 6)
    p = a.uns["autoencoder"]["params"]
    assert p["cost"] == "nb" and p["batch_key"] == "batch"
    assert list(p["batches"]) == ["batch0", "batch1", "batch2"]
    assert list(p["categorical_covariate_keys"]) == ["donor"]
    assert list(p["categorical_categories"]["donor"]) == ["d1", "d2"]
    assert list(p["continuous_covariate_keys"]) == ["pct_mito"]
    assert a.obs.equals(batches.obs)  # the user's data unchanged


def test_log_data_autoencoder_with_batches_and_the_batch_changes_the_code(batches):
    a = batches.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    m = sn.models.Autoencoder(6, hidden=(16,), batch_key="batch", **MFAST).fit(a, progress=False)
    assert m.cost == "mse" and m.module.n_batches == 3
    z = m.transform(a)
    b = a.copy()
    b.obs["batch"] = "batch0"
    assert not np.allclose(z, m.transform(b))  # the encoder reads the batch


def test_without_batch_key_nothing_changes(batches):
    m = sn.models.Autoencoder(6, hidden=(16,), **MFAST).fit(batches, progress=False)
    assert m.conditioning is None and m.module.n_batches == 0
    assert "batch_key" not in m.params
    assert not any(k.startswith(("batch_", "cov_")) for k in m.module.state_dict())


def test_batch_pca_start_is_batch_centred(batches):
    a = batches.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    m = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", max_epochs=1, lr=1e-12).fit(a, progress=False)
    z = m.transform(a)
    # at the start the per-batch means of the code are (nearly) equal: the batch offsets are removed
    means = np.stack([z[a.obs["batch"] == b].mean(0) for b in ["batch0", "batch1", "batch2"]])
    spread = np.abs(means - means.mean(0)).max()
    m0 = sn.models.Autoencoder(4, hidden=(8,), max_epochs=1, lr=1e-12).fit(a, progress=False)
    z0 = m0.transform(a)
    means0 = np.stack([z0[a.obs["batch"] == b].mean(0) for b in ["batch0", "batch1", "batch2"]])
    assert spread < 0.5 * np.abs(means0 - means0.mean(0)).max()


def test_batch_mmd_is_zero_for_one_distribution_and_grows_with_a_shift():
    from scnapse.nn.losses import batch_mmd

    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 4, generator=g)
    groups = torch.arange(200) % 2
    same = float(batch_mmd(z, groups, 2))
    shifted = z + 2.0 * groups[:, None].float()
    assert same < 0.02 < float(batch_mmd(shifted, groups, 2))
    # a group absent from the mini-batch (or a single cell of it) adds nothing
    assert float(batch_mmd(z, torch.zeros(200, dtype=torch.long), 3)) == 0.0
    # its gradient pulls the two groups together
    s = shifted.clone().requires_grad_(True)
    batch_mmd(s, groups, 2).backward()
    assert float(s.grad[groups == 1, 0].mean()) > 0 > float(s.grad[groups == 0, 0].mean())


def test_batch_mmd_default_recorded_saved_and_it_mixes(batches, tmp_path):
    a = batches.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    opts = {"hidden": (16,), "max_epochs": 15, "seed": 0}
    m = sn.models.Autoencoder(4, batch_key="batch", **opts).fit(a, progress=False)
    assert m.params["batch_mmd"] == 0.01 and m.batch_mmd == 0.01
    assert sn.models.Autoencoder(4, **opts).fit(a, progress=False).params["batch_mmd"] == 0.0
    m.save(tmp_path / "m")
    assert sn.models.Autoencoder.load(tmp_path / "m").batch_mmd == 0.01
    off = sn.models.Autoencoder(4, batch_key="batch", batch_mmd=0, **opts).fit(a, progress=False)
    strong = sn.models.Autoencoder(4, batch_key="batch", batch_mmd=1.0, **opts).fit(a, progress=False)
    b = a.obs["batch"].to_numpy()
    assert _batch_entropy(strong.transform(a), b) > _batch_entropy(off.transform(a), b)
    with pytest.raises(ValueError, match="needs batch_key"):
        sn.models.Autoencoder(4, batch_mmd=0.5)


@pytest.mark.parametrize("bad, match", [
    ({"batch_key": "sample"}, "not a column of adata.obs; its columns are: 'batch'"),
    ({"batch_key": "with_nan"}, "missing value"),
    ({"batch_key": "single"}, "single cell"),
    ({"continuous_covariate_keys": ["donor"]}, "must be numeric"),
    ({"categorical_covariate_keys": [3]}, "obs column names"),
])
def test_errors(batches, bad, match):
    a = batches.copy()
    a.obs["with_nan"] = a.obs["batch"].astype(object)
    a.obs.iloc[3, a.obs.columns.get_loc("with_nan")] = np.nan
    a.obs["single"] = ["x"] + ["y"] * (a.n_obs - 1)
    with pytest.raises(ValueError, match=match):
        sn.tl.autoencoder(a, hidden=(8,), n_latent=4, **bad, **FAST)


def test_unknown_batch_points_to_map_query(batches):
    m = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(batches, progress=False)
    q = batches[:20].copy()
    q.obs["batch"] = "new"
    with pytest.raises(ValueError, match="map_query"):
        m.transform(q)


def test_map_query_freezes_the_reference_and_round_trips(batches, tmp_path):
    ref = batches[batches.obs["batch"] != "batch2"].copy()
    query = batches[batches.obs["batch"] == "batch2"].copy()
    query = query[:, ::-1].copy()  # genes matched by name
    model = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(ref, progress=False)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    mapped = sn.tl.map_query(query, model, max_epochs=5)
    assert query.obsm["X_autoencoder"].shape == (query.n_obs, 4)
    rec = query.uns["autoencoder"]["params"]["map_query"]
    assert list(rec["new_batches"]) == ["batch2"] and list(query.uns["autoencoder"]["params"]["batches"])[-1] == "batch2"
    # the reference model is untouched and every reference weight of the mapped one is bit-identical
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    after = mapped.module.state_dict()
    changed = False
    for k, v in before.items():
        if k.startswith("batch_"):
            assert torch.equal(after[k][:, :2], v), k
            changed |= bool(after[k][:, 2].abs().sum() > 0)
        else:
            assert torch.equal(after[k], v), k
    assert changed  # the new batch's own columns were learnt
    # reference cells embed as before
    np.testing.assert_array_equal(mapped.transform(ref), model.transform(ref))
    mapped.save(tmp_path / "m")
    loaded = sn.models.Autoencoder.load(tmp_path / "m")
    assert loaded.conditioning["batches"] == ["batch0", "batch1", "batch2"]
    np.testing.assert_array_equal(loaded.transform(query), query.obsm["X_autoencoder"])


def test_map_query_needs_a_batch_aware_model(batches):
    m = sn.models.Autoencoder(4, hidden=(8,), **MFAST).fit(batches, progress=False)
    with pytest.raises(ValueError, match="batch_key"):
        sn.tl.map_query(batches, m)


def _knn_accuracy(z, labels, k=15):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(k), z, labels, cv=5).mean()


def _batch_entropy(z, batch, k=15):
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    codes = np.unique(batch, return_inverse=True)[1]
    frac = np.stack([(codes[idx] == b).mean(1) for b in range(codes.max() + 1)], 1)
    return float(np.mean(-(frac * np.log(np.clip(frac, 1e-12, None))).sum(1)))


@pytest.mark.slow
def test_real_cross_study_pbmc_mixes_batches_and_keeps_labels():
    a = sn.datasets.pbmc_cross_study()
    opts = {"n_latent": 10, "max_epochs": 60, "progress": False, "seed": 0}
    plain = sn.tl.autoencoder(a, copy=True, **opts).obsm["X_autoencoder"]
    aware = sn.tl.autoencoder(a, copy=True, batch_key="batch", **opts).obsm["X_autoencoder"]
    batch, labels = a.obs["batch"].to_numpy(), a.obs["cell_type"].astype(str).to_numpy()
    assert _batch_entropy(aware, batch) > _batch_entropy(plain, batch) + 0.05
    assert _knn_accuracy(aware, labels) > _knn_accuracy(plain, labels) - 0.05


# -- query mapping: reference codes, the pull onto the reference, its options --------------------
def test_reference_codes_are_training_codes_saved_and_old_models_load_without(batches, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from scnapse.models import autoencoder as ae_module

    m = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(batches, progress=False)
    codes = m.reference_codes
    n_train = m.params["n_train"]
    assert codes.shape == (min(n_train, ae_module.REFERENCE_CODES), 4) and m.params["reference_codes"] == len(codes)
    # each kept code is the code of a cell (its own batch read), nearly exactly
    z = torch.from_numpy(m.transform(batches))
    assert float((codes[:, None] - z[None]).abs().amax(2).min(1).values.max()) < 1e-4
    m.save(tmp_path / "m")
    assert torch.equal(sn.models.Autoencoder.load(tmp_path / "m").reference_codes, codes)
    # at most REFERENCE_CODES of them
    monkeypatch.setattr(ae_module, "REFERENCE_CODES", 50)
    few = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(batches, progress=False)
    assert few.reference_codes.shape == (50, 4)
    # without batches there are none
    assert sn.models.Autoencoder(4, hidden=(8,), **MFAST).fit(batches, progress=False).reference_codes is None
    # a model saved without them (an earlier scnapse) loads, and maps without the pull by default
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["reference_codes"]
    save_file(tensors, str(weights))
    old = sn.models.Autoencoder.load(tmp_path / "m")
    assert old.reference_codes is None
    query = batches[:30].copy()
    query.obs["batch"] = "new"
    mapped = old.map_query(query, max_epochs=2)
    assert mapped.params["map_query"]["batch_mmd"] == 0.0 and mapped.params["map_query"]["reference_codes"] == 0
    with pytest.raises(ValueError, match="reference codes"):
        old.map_query(query, max_epochs=2, batch_mmd=0.3)
    old.reference_codes = torch.from_numpy(old.transform(batches[:100]))  # the fix the message names
    assert old.map_query(query, max_epochs=2, batch_mmd=0.3).params["map_query"]["reference_codes"] == 100


def test_reference_mmd_is_zero_for_one_distribution_and_pulls_toward_the_reference():
    from scnapse.nn.losses import reference_mmd

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(300, 4, generator=g)
    z = torch.randn(200, 4, generator=g)
    same = float(reference_mmd(z, ref))
    assert same < 0.02 < float(reference_mmd(z + 2.0, ref))
    # groups: the sum of each group's discrepancy to the reference
    groups = torch.arange(200) % 2
    shifted = z + 2.0 * groups[:, None].float()
    by_group = float(reference_mmd(shifted, ref, groups))
    parts = float(reference_mmd(shifted[groups == 0], ref)) + float(reference_mmd(shifted[groups == 1], ref))
    assert by_group == pytest.approx(parts, rel=0.3) and by_group > 0.1
    # the gradient moves the shifted codes back toward the reference; none reaches the reference
    s = (z + 2.0).requires_grad_(True)
    r = ref.clone().requires_grad_(True)
    reference_mmd(s, r).backward()
    assert float(s.grad.mean()) > 0 and r.grad is None


def test_the_reference_pull_brings_a_shifted_query_onto_the_reference(batches):
    from scnapse.nn.losses import reference_mmd

    ref = batches[batches.obs["batch"] != "batch2"].copy()
    query = batches[batches.obs["batch"] == "batch2"].copy()
    query.X = query.X.copy()
    query.X[:, ::2] *= 4  # a strong batch effect on half the genes
    model = sn.models.Autoencoder(4, hidden=(16,), batch_key="batch", max_epochs=20, seed=0).fit(ref, progress=False)
    ref_codes = torch.from_numpy(model.transform(ref))

    def distance(batch_mmd):
        mapped = model.map_query(query, batch_mmd=batch_mmd, init="zeros", max_epochs=40)
        rec = mapped.params["map_query"]
        assert rec["batch_mmd"] == batch_mmd and rec["epochs"] == 40 and len(rec["loss"]) == 40
        return float(reference_mmd(torch.from_numpy(mapped.transform(query)), ref_codes)), rec

    without, rec0 = distance(0.0)
    with_pull, rec = distance(3.0)
    assert rec0["reference_mmd"] == [] and rec["reference_mmd"][-1] < rec["reference_mmd"][0]
    assert with_pull < 0.5 * without


def test_map_query_init_starts_the_new_batches_at_the_mean_or_zero(batches):
    ref = batches[batches.obs["batch"] != "batch2"].copy()
    model = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(ref, progress=False)
    import copy

    for init in ("mean", "zeros"):
        module = copy.deepcopy(model.module)
        module.add_batches(2, init=init)
        for name in ("batch_enc", "batch_hidden", "batch_out"):
            old, new = getattr(model.module, name), getattr(module, name)
            assert torch.equal(new[:, :2], old)
            start = old.mean(1) if init == "mean" else torch.zeros(old.shape[0])
            for col in (2, 3):
                assert torch.allclose(new[:, col], start), (init, name)
            assert init == "zeros" or bool(start.abs().sum() > 0)  # the mean is not zero here
    query = batches[batches.obs["batch"] == "batch2"].copy()
    mean = model.map_query(query, max_epochs=1, lr=1e-12, batch_mmd=0)
    zeros = model.map_query(query, max_epochs=1, lr=1e-12, batch_mmd=0, init="zeros")
    assert mean.params["map_query"]["init"] == "mean" and zeros.params["map_query"]["init"] == "zeros"
    assert torch.allclose(mean.module.batch_out[:, 2], model.module.batch_out.mean(1), atol=1e-6)
    assert float(zeros.module.batch_out.detach()[:, 2].abs().max()) < 1e-6


def test_map_query_rescale_learns_a_scale_for_the_new_batch_only(batches, tmp_path):
    ref = batches[batches.obs["batch"] != "batch2"].copy()
    query = batches[batches.obs["batch"] == "batch2"].copy()
    model = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(ref, progress=False)
    assert getattr(model.module, "batch_gain", None) is None  # training adds none
    scaled = model.map_query(query, max_epochs=5)
    gain = scaled.module.batch_gain.detach()
    assert gain.shape == scaled.module.batch_enc.shape
    assert torch.equal(gain[:, :2], torch.zeros(gain.shape[0], 2))  # reference batches: a scale of exactly 1
    assert float(gain[:, 2].abs().max()) > 0  # learnt for the new batch
    assert scaled.params["map_query"]["rescale"] is True
    np.testing.assert_array_equal(scaled.transform(ref), model.transform(ref))
    plain = model.map_query(query, max_epochs=5, rescale=False)
    assert getattr(plain.module, "batch_gain", None) is None and plain.params["map_query"]["rescale"] is False
    assert not np.allclose(scaled.transform(query), plain.transform(query))
    # saved and loaded with its scale; mapping again without rescale keeps the new batch's scale at 1
    scaled.save(tmp_path / "m")
    loaded = sn.models.Autoencoder.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.transform(query), scaled.transform(query))
    more = batches[batches.obs["batch"] == "batch2"].copy()
    more.obs["batch"] = "batch3"
    again = loaded.map_query(more, max_epochs=2, rescale=False)
    assert torch.equal(again.module.batch_gain.detach()[:, 3], torch.zeros(gain.shape[0]))
    assert torch.equal(again.module.batch_gain.detach()[:, :3], gain)


def test_map_query_epochs_by_query_size(batches):
    from scnapse.models.autoencoder import MAP_QUERY_MIN_EPOCHS, MAP_QUERY_STEPS, map_query_epochs

    assert (MAP_QUERY_STEPS, MAP_QUERY_MIN_EPOCHS) == (50, 2)
    assert map_query_epochs(200, 256) == 50  # 1 step a pass
    assert map_query_epochs(400, 256) == 25  # 2 steps a pass
    assert map_query_epochs(700, 256) == 17  # 3 steps a pass
    assert map_query_epochs(10_000, 256) == 2  # 40 steps a pass: at least 2 passes
    assert map_query_epochs(1_000_000, 256) == 2
    ref = batches[batches.obs["batch"] != "batch2"].copy()
    query = batches[batches.obs["batch"].isin(["batch1", "batch2"])].copy()  # known + new cells
    model = sn.models.Autoencoder(4, hidden=(8,), batch_key="batch", **MFAST).fit(ref, progress=False)
    rec = model.map_query(query, batch_size=64).params["map_query"]
    n_new = int((query.obs["batch"] == "batch2").sum())
    assert rec["n_trained"] == n_new and rec["n_query"] == query.n_obs
    assert rec["epochs"] == map_query_epochs(n_new, 64) == len(rec["loss"]) and rec["max_epochs"] is None
    assert model.map_query(query, max_epochs=3).params["map_query"]["epochs"] == 3
