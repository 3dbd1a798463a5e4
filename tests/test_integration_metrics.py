"""scIB integration metrics (through scib-metrics) and their plot."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scnapse as sn

pytest.importorskip("scib_metrics")


def _embeddings(n=240, seed=0):
    """Cells of 4 types in 3 batches; embeddings that mix batches or split them, keep types or not."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 4, n)
    batches = rng.integers(0, 3, n)
    centres = rng.normal(0, 4, (4, 6))
    shifts = rng.normal(0, 6, (3, 6))
    adata = ad.AnnData(rng.poisson(3.0, (n, 30)).astype(np.float32),
                       obs=pd.DataFrame({"cell_type": pd.Categorical([f"t{t}" for t in types]),
                                         "batch": pd.Categorical([f"b{b}" for b in batches])},
                                        index=[f"c{i}" for i in range(n)]))
    noise = rng.normal(0, 1, (n, 6))
    adata.obsm["X_unintegrated"] = (centres[types] + shifts[batches] + noise).astype(np.float32)
    adata.obsm["X_mixed"] = (centres[types] + noise).astype(np.float32)          # ideal integration
    adata.obsm["X_blurred"] = (0.15 * centres[types] + noise).astype(np.float32)  # over-corrected
    return adata


@pytest.fixture(scope="module")
def scored():
    adata = _embeddings()
    table = sn.tl.integration_metrics(adata, keys=["X_unintegrated", "X_mixed", "X_blurred"],
                                      pre_integrated_key="X_unintegrated")
    return adata, table


def test_table_columns_range_and_uns(scored):
    adata, table = scored
    from scnapse.tl._integration import BATCH_METRICS, BIO_METRICS

    assert list(table.index) == ["X_unintegrated", "X_mixed", "X_blurred"]
    for col in (*BIO_METRICS, *BATCH_METRICS, "Bio conservation", "Batch correction", "Total"):
        assert col in table.columns
    scores = table[list(BIO_METRICS) + list(BATCH_METRICS)].drop(columns="Leiden ARI").to_numpy()
    assert np.all((scores >= -1e-6) & (scores <= 1 + 1e-6))
    expected = 0.6 * table["Bio conservation"] + 0.4 * table["Batch correction"]
    np.testing.assert_allclose(table["Total"], expected)
    np.testing.assert_allclose(table["Bio conservation"], table[list(BIO_METRICS)].mean(axis=1))
    assert adata.uns["integration_metrics"] is table
    assert adata.uns["integration_metrics_params"]["batch_key"] == "batch"
    assert np.isfinite(table.loc["X_mixed", "KBET"])


def test_direction_batch_correction_and_bio(scored):
    _, table = scored
    # mixing the batches scores higher batch correction than an embedding split by batch
    for metric in ("iLISI", "KBET", "Silhouette batch", "PCR comparison", "Batch correction"):
        assert table.loc["X_mixed", metric] > table.loc["X_unintegrated", metric], metric
    # keeping the types apart scores higher bio conservation than blurring them
    for metric in ("Leiden ARI", "Leiden NMI", "Silhouette label", "Bio conservation"):
        assert table.loc["X_mixed", metric] > table.loc["X_blurred", metric], metric
    assert table["Total"].idxmax() == "X_mixed"


def test_h5ad_round_trip_and_same_seed_same_table(scored, tmp_path):
    adata, table = scored
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(back.uns["integration_metrics"].drop(columns="seconds"),
                                  table.drop(columns="seconds"), check_dtype=False)
    again = sn.tl.integration_metrics(_embeddings(), keys=["X_unintegrated", "X_mixed", "X_blurred"],
                                      pre_integrated_key="X_unintegrated")
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), table.drop(columns="seconds"))


def test_bad_input_is_named():
    adata = _embeddings(60)
    with pytest.raises(KeyError, match="batch_key='donor'"):
        sn.tl.integration_metrics(adata, keys=["X_mixed"], batch_key="donor")
    with pytest.raises(KeyError, match="X_nope"):
        sn.tl.integration_metrics(adata, keys=["X_nope"])
    one = adata.copy()
    one.obs["batch"] = "b0"
    with pytest.raises(ValueError, match="single batch"):
        sn.tl.integration_metrics(one, keys=["X_mixed"])
    nan = adata.copy()
    nan.obs["batch"] = nan.obs["batch"].astype(object)
    nan.obs.iloc[0, nan.obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sn.tl.integration_metrics(nan, keys=["X_mixed"])


def test_plot_table_and_umaps(scored, tmp_path):
    from matplotlib.figure import Figure

    adata, table = scored
    fig = sn.pl.integration(adata, batch_key="batch", labels_key="cell_type", save=tmp_path / "int.png")
    assert isinstance(fig, Figure)
    assert list(fig.integration_metrics.index) == list(table.index)
    assert len(fig.axes) == 1 + 2 * 3  # the table, a batch and a label UMAP per embedding
    assert (tmp_path / "int.png").stat().st_size > 10_000


def test_pipeline_step_writes_the_table():
    from scnapse.pipeline import Pipeline

    pipe = Pipeline.from_dict({"steps": [{"scnapse.tl.integration_metrics": {
        "keys": ["X_mixed", "X_unintegrated"], "kbet": False, "key_added": "scib"}}]})
    out = pipe.run(_embeddings(80), write=False)
    table = out.uns["scib"]
    assert list(table.index) == ["X_mixed", "X_unintegrated"] and table["KBET"].isna().all()
    assert table.loc["X_mixed", "Batch correction"] > table.loc["X_unintegrated", "Batch correction"]
