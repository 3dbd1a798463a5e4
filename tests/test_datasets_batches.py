"""Multi-batch data sets: the real cross-study PBMC set and simulated batches."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from sklearn.neighbors import NearestNeighbors

import scnapse as sn
from scnapse.pipeline import Pipeline


def _pca_neighbours(adata, k=15):
    b = adata.copy()
    sc.pp.normalize_total(b)
    sc.pp.log1p(b)
    sc.pp.pca(b, n_comps=30, random_state=0)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(b.obsm["X_pca"]).kneighbors(b.obsm["X_pca"])
    return idx[:, 1:]


def test_pbmc_cross_study_shared_genes_counts_and_labels():
    adata = sn.datasets.pbmc_cross_study()
    assert adata.shape == (860, 743)
    assert list(adata.var_names) == sorted(adata.var_names)
    assert adata.obs["batch"].value_counts().to_dict() == {"pbmc68k": 700, "pbmc160": 160}
    x = adata.X.toarray()
    assert np.all(x >= 0) and np.array_equal(x, np.round(x))  # raw counts
    # the counts are the source studies' own, gene by gene
    ref = sn.datasets.pbmc160()
    first = adata[adata.obs["batch"] == "pbmc160"]
    assert np.array_equal(first.X.toarray(), ref[:, list(adata.var_names)].X.toarray())
    types = adata.obs.groupby("batch", observed=True)["cell_type"].agg(lambda s: set(s))
    shared = {"B", "CD14 monocytes", "NK", "CD8 T", "CD4 T", "DC"}
    assert types["pbmc68k"] & types["pbmc160"] == shared
    assert types["pbmc68k"] - shared == {"CD34+ progenitors"}
    assert types["pbmc160"] - shared == {"FCGR3A+ monocytes"}
    # every original label is mapped as the public constant says
    for batch, col in (("pbmc68k", "original_cell_type"), ("pbmc160", "original_cell_type")):
        sub = adata.obs[adata.obs["batch"] == batch]
        mapped = sub[col].astype(str).map(sn.datasets.CROSS_STUDY_LABELS[batch])
        assert (mapped == sub["cell_type"].astype(str)).all()


def test_pbmc_cross_study_has_a_batch_effect_after_pca():
    adata = sn.datasets.pbmc_cross_study()
    idx = _pca_neighbours(adata)
    batch = adata.obs["batch"].to_numpy()
    other = (batch[idx] != batch[:, None]).mean()
    expected = 1 - sum((batch == b).mean() ** 2 for b in np.unique(batch))
    assert other < 0.5 * expected  # the studies stay apart


def test_simulated_batches_shape_seed_and_missing_types():
    a = sn.datasets.simulated_batches(n_cells=600, n_genes=200, seed=1)
    b = sn.datasets.simulated_batches(n_cells=600, n_genes=200, seed=1)
    c = sn.datasets.simulated_batches(n_cells=600, n_genes=200, seed=2)
    assert a.shape == (600, 200)
    assert np.array_equal(a.X.toarray(), b.X.toarray())
    assert not np.array_equal(a.X.toarray(), c.X.toarray())
    x = a.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
    assert set(a.obs["batch"]) == {"batch0", "batch1", "batch2"}
    per_batch = a.obs.groupby("batch", observed=True)["cell_type"].agg(lambda s: set(s))
    assert "type F" not in per_batch["batch0"] and "type F" in per_batch["batch1"]
    assert [b for b, t in per_batch.items() if "type E" in t] == ["batch1"]
    assert set(per_batch["batch2"]) == {"type A", "type B", "type C", "type D", "type F"}
    assert a.uns["dataset"]["params"]["seed"] == 1


def test_simulated_batches_effect_is_neither_trivial_nor_total():
    adata = sn.datasets.simulated_batches(n_cells=1500)
    idx = _pca_neighbours(adata)
    batch, label = adata.obs["batch"].to_numpy(), adata.obs["cell_type"].to_numpy()
    accuracy = (label[idx] == label[:, None]).mean()
    other = (batch[idx] != batch[:, None]).mean()
    assert 0.5 < accuracy < 0.95   # types overlap: the labels are not trivially separated
    assert 0.01 < other < 0.3      # PCA mixes batches little (random would be ~0.67), but not never
    # a stronger batch effect mixes less
    strong = sn.datasets.simulated_batches(n_cells=1500, batch_effect=0.4)
    idx = _pca_neighbours(strong)
    sb = strong.obs["batch"].to_numpy()
    assert (sb[idx] != sb[:, None]).mean() < other


def test_simulated_batches_bad_arguments():
    with pytest.raises(ValueError, match="n_batches"):
        sn.datasets.simulated_batches(n_batches=1)
    with pytest.raises(ValueError, match="n_cells"):
        sn.datasets.simulated_batches(n_cells=5)


@pytest.mark.parametrize("name", ["pbmc_cross_study", "simulated_batches"])
def test_pipeline_reads_the_batch_sets(name):
    pipe = Pipeline.from_dict({"name": "b", "input": {"dataset": name},
                               "steps": [{"scanpy.pp.normalize_total": {"target_sum": 10000}}]})
    out = pipe.run(write=False)
    assert "batch" in out.obs and "cell_type" in out.obs
    assert out.uns["scnapse"]["input"] == "in memory"
