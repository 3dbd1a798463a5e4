"""The bundled single-cell qPCR set (real-valued ΔCt, negative values) and the classifier on it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import scnapse as sn
from scnapse.pipeline.readers import load_input

STAGES = ["2-cell", "4-cell", "8-cell", "16-cell", "32-cell", "64-cell"]


def test_guo_qpcr_shape_labels_and_values():
    adata = sn.datasets.guo_qpcr()
    assert adata.shape == (428, 48)
    assert adata.X.dtype == np.float32 and isinstance(adata.X, np.ndarray)
    assert np.isfinite(adata.X).all() and np.isfinite(adata.layers["ct"]).all()
    assert (adata.X < 0).any()  # ΔCt: genes more abundant than the housekeepers are negative
    assert list(adata.obs["stage"].cat.categories) == STAGES and adata.obs["stage"].cat.ordered
    counts = adata.obs["stage"].value_counts(sort=False).to_dict()
    assert counts == {"2-cell": 19, "4-cell": 23, "8-cell": 43, "16-cell": 75, "32-cell": 109, "64-cell": 159}
    assert (adata.obs["stage"].astype(str) == adata.obs["num_cells"].astype(str) + "-cell").all()
    assert adata.obs["embryo"].nunique() == 42
    # every embryo is at one stage, and its cells are named after it
    assert (adata.obs.groupby("embryo", observed=True)["stage"].nunique() == 1).all()
    assert all(name.startswith(emb + ".") for name, emb in zip(adata.obs_names, adata.obs["embryo"].astype(str)))
    assert {"Actb", "Gapdh", "Id2", "Sox2", "Nanog", "Gata4", "Cdx2"} <= set(adata.var_names)
    # Ct: 28 = not detected; ΔCt is each cell's Ct minus the mean of its own Actb and Gapdh
    ct = adata.layers["ct"].astype(np.float64)
    assert ct.max() == 28 and 0.2 < (ct == 28).mean() < 0.3
    hk = ct[:, [adata.var_names.get_loc("Actb"), adata.var_names.get_loc("Gapdh")]].mean(1)
    np.testing.assert_allclose(adata.X, ct - hk[:, None], atol=1e-4)
    np.testing.assert_allclose(adata.X[:, [adata.var_names.get_loc("Actb"), adata.var_names.get_loc("Gapdh")]].mean(1),
                               0.0, atol=1e-4)
    assert sn.datasets.guo_qpcr() is not adata  # a new object on every call
    loaded, path = load_input({"dataset": "guo_qpcr"})
    assert loaded.shape == (428, 48) and path.name == "guo_qpcr.h5ad"


def test_guo_qpcr_known_biology():
    """What Guo et al. 2010 report: Id2 (outer cells, trophectoderm) and Sox2 (inner cells) are
    expressed in opposite cells from the 32-cell stage, as are Fgf4 and its receptor Fgfr2 in the
    inner cell mass; Id2 rises from the 8-cell stage to the blastocyst (ΔCt falls)."""
    adata = sn.datasets.guo_qpcr()
    stage = adata.obs["stage"].astype(str).to_numpy()

    def gene(name, at):
        return adata.X[stage == at, adata.var_names.get_loc(name)]

    for at in ("32-cell", "64-cell"):
        # (with destiny's scrambled normalisation these were -0.68/-0.59 and -0.38/-0.54)
        assert np.corrcoef(gene("Id2", at), gene("Sox2", at))[0, 1] < -0.65
        assert np.corrcoef(gene("Fgf4", at), gene("Fgfr2", at))[0, 1] < -0.6
    assert np.median(gene("Id2", "64-cell")) < np.median(gene("Id2", "8-cell")) - 3


def test_classifier_annotates_held_out_qpcr_cells():
    adata = sn.datasets.guo_qpcr()
    y = adata.obs["stage"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(adata.n_obs), test_size=0.25, stratify=y, random_state=0)
    ref, query = adata[tr].copy(), adata[te].copy()
    model = sn.tl.train_classifier(ref, labels_key="stage", hidden=(32,), max_epochs=30, progress=False, seed=0)
    # recorded as real-valued features, standardised with the training cells' statistics
    assert model.input_kind == "features" and ref.uns["classifier"]["params"]["input"] == "features"
    assert model.prep.scale and not model.prep.log_normalize
    np.testing.assert_allclose(model.prep.mean.cpu().numpy(), ref.X.mean(0), atol=1e-3)
    sn.tl.annotate(query, model, min_typicality=0.0, min_confidence=0.0)
    assert query.uns["predicted"]["params"]["query_input"] == "features"
    acc = float(np.mean(query.obs["predicted"].astype(str).to_numpy() == y[te]))
    # chance: 0.37 (every cell called 64-cell); measured 0.92–0.96 over four splits
    assert acc > 0.85, acc
    mean, std = ref.X.mean(0), ref.X.std(0)
    lr = LogisticRegression(max_iter=1000).fit((ref.X - mean) / std, y[tr])
    lr_acc = float(np.mean(lr.predict((query.X - mean) / std) == y[te]))
    # logistic regression 0.96–0.98 on the same splits; 107 held-out cells: SE ≈ 0.02
    assert acc >= lr_acc - 0.08, (acc, lr_acc)
    # errors are between neighbouring stages (e.g. 32- vs 64-cell), not far ones
    order = {s: i for i, s in enumerate(STAGES)}
    wrong = query.obs["predicted"].astype(str).to_numpy() != y[te]
    gaps = [abs(order[p] - order[t]) for p, t in zip(query.obs["predicted"].astype(str)[wrong], y[te][wrong])]
    assert all(g <= 1 for g in gaps), gaps


def test_autoencoder_embeds_qpcr_features_and_still_refuses_scaled_queries_of_log_models():
    from conftest import make_counts

    adata = sn.datasets.guo_qpcr()
    sn.tl.autoencoder(adata, n_latent=4, hidden=(16,), max_epochs=3, progress=False, seed=0)
    emb = adata.obsm["X_autoencoder"]
    assert emb.shape == (428, 4) and np.isfinite(emb).all()
    assert adata.uns["autoencoder"]["params"]["cost"] == "mse"
    model = sn.models.Autoencoder(4, hidden=(16,), max_epochs=2, seed=0).fit(adata, progress=False)
    np.testing.assert_allclose(model.transform(adata[:50].copy()), model.transform(adata)[:50], atol=1e-5)
    # a model trained on log-normalised data does not take negative (scaled) values
    counts = make_counts(n_obs=120, n_vars=40, seed=0)
    import scanpy as sc

    sc.pp.normalize_total(counts, target_sum=1e4)
    sc.pp.log1p(counts)
    log_model = sn.models.Autoencoder(4, hidden=(16,), max_epochs=2, seed=0).fit(counts, progress=False)
    scaled = counts.copy()
    sc.pp.scale(scaled)
    with pytest.raises(ValueError, match="negative values"):
        log_model.transform(scaled)
