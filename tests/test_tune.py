"""Hyperparameter search: Optuna TPE / random / grid, reproducible, written back as a pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import scnapse as sn
from scnapse.pipeline import Pipeline, tune_from_yaml
from scnapse.tl._tune import _grid, _parse_space

SPACE = {"lr": {"log_uniform": [1e-3, 3e-2]}, "hidden": {"choice": [[8], [16]]}}


def test_tune_finds_and_records_the_best(lognorm_adata):
    sn.tl.tune(lognorm_adata, space=SPACE, n_trials=4, fixed={"max_epochs": 3}, prune=False)
    rec = lognorm_adata.uns["tune"]
    table = rec["trials"]
    assert len(table) == 4 and rec["metric"] == "val_loss" and not rec["maximize"]
    assert rec["best_value"] == pytest.approx(table["val_loss"].min())
    assert np.all(np.diff(table["best_so_far"].to_numpy()) <= 0)  # best so far only improves
    best = dict(rec["best_params"])
    assert 1e-3 <= best["lr"] <= 3e-2 and list(best["hidden"]) in ([8], [16]) and best["max_epochs"] == 3


def test_tune_is_reproducible(lognorm_adata):
    a = sn.tl.tune(lognorm_adata, space=SPACE, n_trials=3, sampler="random", fixed={"max_epochs": 2}, copy=True)
    b = sn.tl.tune(lognorm_adata, space=SPACE, n_trials=3, sampler="random", fixed={"max_epochs": 2}, copy=True)
    assert a.uns["tune"]["trials"].equals(b.uns["tune"]["trials"])
    assert "tune" not in lognorm_adata.uns  # copy=True left the input alone


def test_label_metric_and_grid(lognorm_adata):
    sn.tl.tune(lognorm_adata, space={"lr": {"log_uniform": [1e-3, 1e-2]}}, n_trials=2, sampler="grid",
               labels_key="cell_type", fixed={"max_epochs": 3})
    rec = lognorm_adata.uns["tune"]
    assert rec["metric"] == "knn_accuracy" and rec["maximize"]
    assert sorted(rec["trials"]["lr"].round(6)) == [0.001, 0.01]  # the grid's two ends
    assert 0 <= rec["best_value"] <= 1


def test_grid_has_about_n_trials_points():
    grid = _grid(_parse_space({"lr": {"log_uniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0, 0.4]},
                               "optimizer": ["adam", "sgd"]}), 18)
    assert len(grid["lr"]) == 3 and len(grid["dropout"]) == 3 and len(grid["optimizer"]) == 2
    assert grid["lr"][1] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"space": {"lr": {"normal": [0, 1]}}}, "unknown range kind"),
     ({"space": {"lr": {"log_uniform": [0, 1]}}}, "positive lower bound"),
     ({"space": {"learning_rate": [0.1]}}, "cannot be tuned"),
     ({"space": SPACE, "metric": "macro_f1"}, "does not fit"),
     ({"space": SPACE, "metric": "knn_accuracy"}, "needs labels_key"),
     ({"space": SPACE, "sampler": "cmaes"}, "sampler"),
     ({"space": {"cost": ["mse", "kl"]}}, "not comparable")],
)
def test_bad_spaces_are_explained(lognorm_adata, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sn.tl.tune(lognorm_adata, n_trials=1, **kwargs)


def test_cli_tuning_file_writes_the_best_pipeline(tmp_path, monkeypatch):
    from scnapse.cli import main

    monkeypatch.chdir(tmp_path)
    pipeline = {"input": {"dataset": "pbmc68k"}, "output": "out.h5ad", "seed": 0,
                "steps": ["scanpy.pp.log1p",
                          {"step": "scnapse.tl.autoencoder", "id": "ae", "params": {"max_epochs": 2, "n_latent": 4}}]}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({
        "pipeline": pipeline, "tune": "ae", "sampler": "random", "trials": 5, "seed": 1,
        "space": {"lr": {"log_uniform": [1e-4, 1e-2]}}, "output": "best.yaml", "table": "trials.csv"}))
    assert main(["tune", "tune.yaml", "--trials", "2"]) == 0
    best = Pipeline.from_yaml(tmp_path / "best.yaml")
    params = best.steps[1].params
    assert params["max_epochs"] == 2 and params["n_latent"] == 4 and 1e-4 <= params["lr"] <= 1e-2
    assert len((tmp_path / "trials.csv").read_text().strip().splitlines()) == 3  # header + 2 trials
    _, adata = tune_from_yaml(tmp_path / "tune.yaml", trials=2)
    assert adata.uns["tune"]["best_params"]["lr"] == pytest.approx(params["lr"])  # seeded: same again
