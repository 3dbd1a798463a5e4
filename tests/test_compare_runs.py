"""Runs of a training step side by side: sn.tl.compare_runs, sn.pl.compare_runs, the pipeline step."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from conftest import make_counts

import scnapse as sn
from scnapse.pipeline import Pipeline
from scnapse.tl._compare_runs import parse_values

OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam"]


@pytest.fixture(scope="module")
def pbmc_log():
    adata = sn.datasets.pbmc68k()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def test_four_optimizers_on_pbmc_match_separate_runs(pbmc_log):
    from matplotlib.lines import Line2D

    adata = pbmc_log.copy()
    fixed = {"max_epochs": 4, "n_latent": 8, "pca_init": False}
    sn.tl.compare_runs(adata, step="autoencoder", vary={"optimizer": OPTIMIZERS}, fixed=fixed,
                       labels_key="bulk_labels", seed=1)
    rec = adata.uns["compare_runs"]
    table = rec["table"]
    assert list(table["optimizer"]) == OPTIMIZERS
    for opt in OPTIMIZERS:
        alone = pbmc_log.copy()
        sn.tl.autoencoder(alone, optimizer=opt, seed=1, progress=False, **fixed)
        hist = alone.uns["autoencoder"]["history"]
        assert table.loc[f"optimizer={opt}", "final_val_loss"] == hist["val_loss"][-1]
        assert table.loc[f"optimizer={opt}", "best_epoch"] == hist["best_epoch"]
        assert np.array_equal(adata.obsm[f"X_autoencoder_optimizer={opt}"], alone.obsm["X_autoencoder"])
    assert "X_autoencoder" not in adata.obsm and "autoencoder" not in adata.uns  # runs leave only their record
    assert len(set(table["final_val_loss"])) == 4  # the optimizers really differ
    assert (table["knn_accuracy"] > 0.3).all()  # 10 PBMC types: chance ≈ 0.1–0.2
    fig = sn.pl.compare_runs(adata)
    ax = fig.axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert len(solid) == 4 and len(dashed) == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [f"optimizer={o}" for o in OPTIMIZERS] == legend[:4]
    assert all(isinstance(h, Line2D) for h in ax.get_legend().legend_handles)
    assert len(fig.axes) == 2 + 4  # curves, scores, four embeddings


def test_sweep_strings_and_grid():
    assert parse_values("lr", "log:1e-5..1e-1") == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert parse_values("lr", "log:1e-4..1e-2:3") == [1e-4, 1e-3, 1e-2]
    assert parse_values("l2", "lin:0..1:3") == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="log:1e-5..1e-1"):
        parse_values("lr", "1e-5 to 1e-1")
    adata = make_counts(60, 12)
    sn.tl.compare_runs(adata, vary={"lr": [1e-3, 1e-2], "l2": [0.0, 0.1]},
                       fixed={"max_epochs": 2, "n_latent": 2, "hidden": [8]}, keep_embeddings=False)
    table = adata.uns["compare_runs"]["table"]
    assert list(table.index) == ["lr=0.001,l2=0", "lr=0.001,l2=0.1", "lr=0.01,l2=0", "lr=0.01,l2=0.1"]
    assert not any(k.startswith("X_autoencoder") for k in adata.obsm)


def test_lr_sweep_plot_is_loss_against_lr_on_a_log_axis():
    adata = make_counts(60, 12)
    sn.tl.compare_runs(adata, vary={"lr": "log:1e-4..1e-1:4"}, fixed={"max_epochs": 2, "n_latent": 2, "hidden": [8]})
    fig = sn.pl.compare_runs(adata, embeddings=False)
    ax = fig.axes[1]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr"
    x = ax.get_lines()[0].get_xdata()
    assert np.allclose(x, [1e-4, 1e-3, 1e-2, 1e-1])
    assert np.allclose(ax.get_lines()[0].get_ydata(), adata.uns["compare_runs"]["table"]["final_val_loss"])


def test_classifier_runs_report_held_out_scores():
    adata = make_counts(90, 12)
    sn.tl.compare_runs(adata, step="classifier", vary={"l2": [0.0, 0.01]}, labels_key="cell_type",
                       fixed={"max_epochs": 3, "hidden": [8]})
    table = adata.uns["compare_runs"]["table"]
    assert {"accuracy", "macro_f1"} <= set(table.columns)
    assert table["accuracy"].between(0, 1).all()
    assert adata.uns["compare_runs"]["obsm_keys"] == []


def test_bad_input_names_the_fix():
    adata = make_counts(30, 8)
    with pytest.raises(ValueError, match="valid names"):
        sn.tl.compare_runs(adata, vary={"optimiser": ["sgd"]})
    with pytest.raises(ValueError, match="cannot be tuned"):
        sn.tl.compare_runs(adata, step="annotate", vary={"lr": [0.1]})
    with pytest.raises(ValueError, match="both varied and fixed"):
        sn.tl.compare_runs(adata, vary={"lr": [0.1]}, fixed={"lr": 0.2})
    with pytest.raises(ValueError, match="labels_key"):
        sn.tl.compare_runs(adata, step="classifier", vary={"lr": [0.1]})
    assert "compare_runs" not in adata.uns


def test_pipeline_step_reruns_to_the_same_numbers(tmp_path):
    spec = {
        "name": "optimizers",
        "input": {"dataset": "pbmc68k"},
        "seed": 2,
        "steps": [
            {"scanpy.pp.normalize_total": {"target_sum": 10000}},
            "scanpy.pp.log1p",
            {"scnapse.tl.compare_runs": {"vary": {"optimizer": ["sgd", "adam"]},
                                         "fixed": {"max_epochs": 2, "n_latent": 4}}},
            {"scnapse.pl.compare_runs": {"save": str(tmp_path / "cmp.png")}},
        ],
    }
    a = Pipeline.from_dict(spec).run(write=False)
    b = Pipeline.from_dict(spec).run(write=False)
    ta, tb = a.uns["compare_runs"]["table"], b.uns["compare_runs"]["table"]
    assert ta["final_val_loss"].tolist() == tb["final_val_loss"].tolist()
    assert a.uns["compare_runs"]["seed"] == 2  # the pipeline's seed reaches every run
    assert (tmp_path / "cmp.png").stat().st_size > 1000
