"""sn.tl.autoencoder and sn.models.Autoencoder: results, records, copies, save/load, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import scnapse as sn
from conftest import make_counts


def test_writes_embedding_and_record(lognorm_adata, tiny):
    sn.tl.autoencoder(lognorm_adata, n_latent=3, **tiny)
    emb = lognorm_adata.obsm["X_autoencoder"]
    assert emb.shape == (lognorm_adata.n_obs, 3) and np.isfinite(emb).all()
    rec = lognorm_adata.uns["autoencoder"]
    p = rec["params"]
    for key in ("cost", "activation", "optimizer", "lr", "seed", "device", "max_epochs", "dropout", "l2"):
        assert key in p
    assert p["cost"] == "mse" and p["seed"] == 0 and p["device"] == "cpu"
    assert p["environment"]["versions"]["torch"]
    assert len(rec["history"]["train_loss"]) == len(rec["history"]["epoch"]) >= 1


def test_embedding_separates_cell_types(lognorm_adata):
    from scnapse.tl._compare import knn_accuracy

    sn.tl.autoencoder(lognorm_adata, n_latent=4, max_epochs=60, progress=False)
    acc = knn_accuracy(lognorm_adata.obsm["X_autoencoder"], lognorm_adata.obs["cell_type"], n_neighbors=5)
    assert acc > 0.9


def test_copy_leaves_input_untouched(lognorm_adata, tiny):
    before = lognorm_adata.copy()
    out = sn.tl.autoencoder(lognorm_adata, copy=True, **tiny)
    assert isinstance(out, ad.AnnData) and "X_autoencoder" in out.obsm
    assert "X_autoencoder" not in lognorm_adata.obsm and "autoencoder" not in lognorm_adata.uns
    assert (lognorm_adata.X != before.X).nnz == 0


def test_inplace_returns_none_and_key_added(lognorm_adata, tiny):
    assert sn.tl.autoencoder(lognorm_adata, key_added="X_ae2", **tiny) is None
    assert "X_ae2" in lognorm_adata.obsm and "X_ae2" in lognorm_adata.uns


def test_same_seed_identical_different_seed_not(lognorm_adata, tiny):
    a = sn.tl.autoencoder(lognorm_adata, copy=True, **tiny).obsm["X_autoencoder"]
    b = sn.tl.autoencoder(lognorm_adata, copy=True, **tiny).obsm["X_autoencoder"]
    c = sn.tl.autoencoder(lognorm_adata, copy=True, **{**tiny, "seed": 1}).obsm["X_autoencoder"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_sparse_and_dense_give_the_same_embedding(lognorm_adata, tiny):
    dense = lognorm_adata.copy()
    dense.X = lognorm_adata.X.toarray()
    a = sn.tl.autoencoder(lognorm_adata, copy=True, **tiny).obsm["X_autoencoder"]
    b = sn.tl.autoencoder(dense, copy=True, **tiny).obsm["X_autoencoder"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


def test_integer_and_float64_inputs_are_accepted_unchanged(tiny):
    adata = make_counts()
    adata.X = adata.X.toarray().astype(np.int64)
    before = adata.X.copy()
    sn.tl.autoencoder(adata, **tiny)
    assert adata.X.dtype == np.int64 and np.array_equal(adata.X, before)
    assert adata.uns["autoencoder"]["params"]["log_normalize"] is True  # counts detected
    adata.X = before.astype(np.float64)
    sn.tl.autoencoder(adata, **tiny)
    assert adata.X.dtype == np.float64


def test_backed_matches_in_memory(tmp_path, lognorm_adata, tiny):
    path = tmp_path / "cells.h5ad"
    lognorm_adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    model = sn.models.Autoencoder(3, max_epochs=3, seed=0).fit(backed, progress=False)
    assert model.params["matrix"] == "backed"
    mem = sn.models.Autoencoder(3, max_epochs=3, seed=0).fit(lognorm_adata, progress=False)
    np.testing.assert_allclose(model.transform(backed), mem.transform(lognorm_adata), rtol=1e-4, atol=1e-5)
    backed.file.close()


def test_layer_and_highly_variable(lognorm_adata, tiny):
    lognorm_adata.var["highly_variable"] = np.arange(lognorm_adata.n_vars) < 20
    sn.tl.autoencoder(lognorm_adata, layer="counts", cost="nb", **tiny)
    p = lognorm_adata.uns["autoencoder"]["params"]
    assert p["n_vars"] == 20 and p["layer"] == "counts" and p["use_highly_variable"] is True


@pytest.mark.parametrize("cost", ["poisson", "nb"])
def test_count_costs_on_counts(counts_adata, cost, tiny):
    sn.tl.autoencoder(counts_adata, cost=cost, **tiny)
    assert np.isfinite(counts_adata.obsm["X_autoencoder"]).all()


def test_variational(lognorm_adata, tiny):
    sn.tl.autoencoder(lognorm_adata, variational=True, n_latent=2, **tiny)
    assert lognorm_adata.obsm["X_autoencoder"].shape[1] == 2
    assert lognorm_adata.uns["autoencoder"]["params"]["variational"] is True


def test_save_load_round_trip(tmp_path, lognorm_adata):
    model = sn.models.Autoencoder(4, max_epochs=3, seed=0, variational=True, cost="mse")
    model.fit(lognorm_adata, progress=False)
    emb = model.transform(lognorm_adata)
    model.save(tmp_path / "ae")
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == ["config.json", "model.safetensors"]
    loaded = sn.models.Autoencoder.load(tmp_path / "ae")
    assert np.array_equal(loaded.transform(lognorm_adata), emb)
    assert list(loaded.var_names) == list(lognorm_adata.var_names)


def test_load_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a scnapse model"):
        sn.models.Autoencoder.load(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        sn.models.Autoencoder.load(tmp_path / "nothing")


def test_load_refuses_a_newer_format(tmp_path, lognorm_adata):
    import json

    sn.models.Autoencoder(2, max_epochs=1).fit(lognorm_adata, progress=False).save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Upgrade scnapse"):
        sn.models.Autoencoder.load(tmp_path / "m")


def test_transform_aligns_genes_by_name(lognorm_adata):
    model = sn.models.Autoencoder(3, max_epochs=2).fit(lognorm_adata, progress=False)
    ref = model.transform(lognorm_adata)
    shuffled = lognorm_adata[:, np.random.default_rng(0).permutation(lognorm_adata.n_vars)].copy()
    np.testing.assert_allclose(model.transform(shuffled), ref, rtol=1e-5, atol=1e-6)
    fewer = lognorm_adata[:, 5:].copy()  # 5 of 40 genes missing
    with pytest.warns(UserWarning, match="5 of the autoencoder's 40 genes are missing"):
        model.transform(fewer)
    with pytest.raises(ValueError, match="Only 10 of the autoencoder's 40 genes"):
        model.transform(lognorm_adata[:, :10].copy())


def _unchanged(adata, snapshot):
    assert set(adata.obsm) == set(snapshot.obsm) and set(adata.uns) == set(snapshot.uns)
    a = adata.X.toarray() if sparse.issparse(adata.X) else adata.X
    b = snapshot.X.toarray() if sparse.issparse(snapshot.X) else snapshot.X
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize(
    "prepare, kwargs, error, match",
    [
        (lambda a: a.X.data.__setitem__(0, np.nan), {}, ValueError, "NaN"),
        (lambda a: None, {"layer": "spliced"}, KeyError, "layer='spliced' is not in adata.layers"),
        (lambda a: None, {"learning_rate": 1}, ValueError, "Valid training options"),
        (lambda a: None, {"cost": "bce"}, ValueError, "bce"),
        (lambda a: None, {"cost": "nb"}, ValueError, "raw non-negative integer counts"),
        (lambda a: None, {"cost": "cross_entropy"}, ValueError, "does not fit an autoencoder"),
        (lambda a: None, {"use_highly_variable": True}, KeyError, "highly_variable"),
        (lambda a: None, {"optimizer": "lbfgs"}, ValueError, "choose one of"),
    ],
)
def test_bad_input_is_refused_clearly_and_data_kept(lognorm_adata, prepare, kwargs, error, match):
    prepare(lognorm_adata)
    snapshot = lognorm_adata.copy()
    with pytest.raises(error, match=match):
        sn.tl.autoencoder(lognorm_adata, max_epochs=2, progress=False, **kwargs)
    _unchanged(lognorm_adata, snapshot)


def test_scaled_data_refused_by_kl(lognorm_adata):
    import scanpy as sc

    sc.pp.scale(lognorm_adata)
    with pytest.raises(ValueError, match="negative values"):
        sn.tl.autoencoder(lognorm_adata, cost="kl", max_epochs=1, progress=False)


def test_empty_and_single_cell_refused(lognorm_adata):
    with pytest.raises(ValueError, match="empty"):
        sn.tl.autoencoder(lognorm_adata[:0].copy(), progress=False)
    with pytest.raises(ValueError, match="1 cell"):
        sn.tl.autoencoder(lognorm_adata[:1].copy(), progress=False)
    with pytest.raises(ValueError, match="validation_fraction"):
        sn.tl.autoencoder(lognorm_adata[:3].copy(), progress=False)


def test_loss_plot(lognorm_adata, tiny, tmp_path):
    sn.tl.autoencoder(lognorm_adata, **tiny)
    ax = sn.pl.loss(lognorm_adata, "autoencoder", save=str(tmp_path / "loss.png"))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "train" in labels and "validation" in labels
    assert len(ax.lines[0].get_xdata()) == len(lognorm_adata.uns["autoencoder"]["history"]["epoch"])
    assert (tmp_path / "loss.png").stat().st_size > 1000
    with pytest.raises(KeyError, match="no training history"):
        sn.pl.loss(lognorm_adata, "classifier")


def test_uns_record_survives_h5ad(tmp_path, lognorm_adata, tiny):
    sn.tl.autoencoder(lognorm_adata, **tiny)
    lognorm_adata.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.uns["autoencoder"]["params"]["optimizer"] == "adam"
    np.testing.assert_array_equal(back.obsm["X_autoencoder"], lognorm_adata.obsm["X_autoencoder"])


def test_real_pbmc_embedding_matches_pca(pbmc68k):
    """Biology on real data: the default autoencoder keeps the PBMC cell types apart."""
    import scanpy as sc

    from scnapse.tl._compare import knn_accuracy

    adata = pbmc68k.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sn.tl.autoencoder(adata, progress=False)
    acc = knn_accuracy(adata.obsm["X_autoencoder"], adata.obs["bulk_labels"])
    assert acc > 0.75  # PCA(50) on scaled data: 0.81; chance: ~0.2


def test_transform_refuses_nan_and_log_normalises_sparse_blocks_like_dense(counts_adata):
    model = sn.models.Autoencoder(3, max_epochs=2).fit(counts_adata, progress=False)
    assert model.prep.log_normalize  # raw counts were detected
    dense = counts_adata.copy()
    dense.X = counts_adata.X.toarray()
    np.testing.assert_allclose(model.transform(counts_adata), model.transform(dense), rtol=1e-5, atol=1e-5)
    bad = counts_adata.copy()
    bad.X.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)


def test_pca_init_starts_at_the_principal_components(lognorm_adata):
    """Before any step the code is PCA's scores and the reconstruction PCA's (mse)."""
    import torch

    X = lognorm_adata.X.toarray().astype(np.float64)
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    scores = Xc @ vt[:4].T
    model = sn.models.Autoencoder(4, validation_fraction=0.0, max_epochs=1, lr=1e-30, seed=0)
    z = model.fit(lognorm_adata, progress=False).transform(lognorm_adata)
    for j in range(4):  # same components up to sign
        np.testing.assert_allclose(np.abs(z[:, j]), np.abs(scores[:, j]), rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        recon = model.module.decode(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(recon, X.mean(0) + scores @ vt[:4], atol=1e-3)
    plain = sn.models.Autoencoder(4, validation_fraction=0.0, max_epochs=1, lr=1e-30, seed=0, pca_init=False)
    z_plain = plain.fit(lognorm_adata, progress=False).transform(lognorm_adata)
    assert not np.allclose(np.abs(z_plain[:, 0]), np.abs(scores[:, 0]), atol=0.1)


def test_principal_components_on_few_cells_many_genes():
    """More genes than cells goes through the cells' Gram matrix: same subspace as an SVD."""
    import torch

    from scnapse.models._preprocess import Preprocessing
    from scnapse.models.autoencoder import principal_components
    from scnapse.train.data import Matrix

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(30, 3)) @ rng.normal(size=(3, 80)) + 0.1 * rng.normal(size=(30, 80))).astype(np.float32)
    prep = Preprocessing(log_normalize=False, scale=False)
    prep.fit([torch.from_numpy(X)])
    mean, comps, n = principal_components(Matrix(X), np.arange(30), prep, 3, seed=0)
    _, _, vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    assert n == 30 and comps.shape == (3, 80)
    np.testing.assert_allclose(np.abs(comps.numpy() @ vt[:3].T), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(mean.numpy(), X.mean(0), atol=1e-5)


@pytest.mark.slow
def test_pca_init_beats_a_plain_autoencoder_on_real_data():
    """Biology on real data (pbmc160, 8 types × 20 cells): starting from PCA keeps the types apart
    far better than a plain MLP autoencoder, whose early stopping ends it before it has learnt them."""
    import scanpy as sc

    from scnapse.tl._compare import knn_accuracy

    adata = sn.datasets.pbmc160()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    adata = adata[:, adata.var.highly_variable].copy()
    y = adata.obs["cell_type"]
    default = knn_accuracy(sn.tl.autoencoder(adata, progress=False, seed=0, copy=True).obsm["X_autoencoder"], y)
    plain = knn_accuracy(sn.tl.autoencoder(adata, progress=False, seed=0, pca_init=False,
                                           copy=True).obsm["X_autoencoder"], y)
    assert default > 0.84  # measured 0.88 (mean of 3 seeds); scVI 0.77, PCA(50) on scaled data 0.53
    assert default > plain + 0.02  # plain: 0.80 (seeds 0-5: 0.76-0.83, with PCA 0.86-0.91)


@pytest.mark.slow
def test_natural_model_follows_the_data(counts_adata, lognorm_adata, tiny):
    """Raw counts get the negative-binomial VAE, log data the mse autoencoder; options override."""
    a = sn.tl.autoencoder(counts_adata, copy=True, **tiny)
    params = a.uns["autoencoder"]["params"]
    assert (params["cost"], params["variational"], params["log_normalize"]) == ("nb", True, True)
    b = sn.tl.autoencoder(lognorm_adata, copy=True, **tiny)
    assert (b.uns["autoencoder"]["params"]["cost"], b.uns["autoencoder"]["params"]["variational"]) == ("mse", False)
    c = sn.tl.autoencoder(counts_adata, copy=True, variational=False, **tiny)
    assert (c.uns["autoencoder"]["params"]["cost"], c.uns["autoencoder"]["params"]["variational"]) == ("nb", False)
    d = sn.tl.autoencoder(counts_adata, copy=True, cost="mse", **tiny)
    assert (d.uns["autoencoder"]["params"]["cost"], d.uns["autoencoder"]["params"]["variational"]) == ("mse", False)
    # one model object refit on other data resolves again
    model = sn.models.Autoencoder(3, max_epochs=5, seed=0)
    model.fit(counts_adata, progress=False)
    assert model.variational and model.cost == "nb"
    model.fit(lognorm_adata, progress=False)
    assert not model.variational and model.cost == "mse"
