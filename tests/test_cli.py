"""Command-line details: the version flag; files it writes are readable as ordinary files."""

from __future__ import annotations

import os

import pytest

import scnapse as sn
from scnapse.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and sn.__version__ in capsys.readouterr().out


def test_checkpoints_get_the_usual_file_mode(tmp_path):
    from scnapse.train import Checkpoint

    umask = os.umask(0o022)
    try:
        path = Checkpoint(tmp_path / "ckpt").save({"epoch": 1})
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644


def _write_counts(path):
    from conftest import make_counts

    make_counts(n_obs=60, n_vars=20).write_h5ad(path)
    return path


def _many_steps_pipeline(tmp_path, n: int = 11) -> str:
    """A pipeline of ``n`` cheap steps whose parameters tell them apart, one with a list."""
    import yaml

    steps = [{"scanpy.pp.filter_genes": {"min_cells": i}} for i in range(n - 1)]
    steps.append({"scanpy.pp.filter_cells": {"min_counts": 0}})
    steps.insert(0, {"scanpy.pp.normalize_total": {"target_sum": 10000, "exclude_highly_expressed": False}})
    steps.append({"scanpy.pp.log1p": {}})
    data = {"name": "many", "input": str(_write_counts(tmp_path / "in.h5ad")), "output": str(tmp_path / "out.h5ad"),
            "steps": steps}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_info_lists_steps_in_numeric_order_and_lists_as_lists(tmp_path, capsys):
    from scnapse.pipeline import Pipeline

    pipe = Pipeline.from_yaml(_many_steps_pipeline(tmp_path))
    pipe.steps[1].params["min_cells"] = 0
    adata = pipe.run()
    # a list parameter, as compare_embeddings' keys are, recorded the way a run records them
    adata.uns["scnapse"]["resolved_steps"]["1"]["params"]["keys"] = ["X_a", "X_b"]
    adata.write_h5ad(tmp_path / "out.h5ad")
    assert main(["info", str(tmp_path / "out.h5ad")]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and ". scanpy." in ln]
    assert len(lines) == 13
    for i, line in enumerate(lines[1:11]):  # steps 2..11: filter_genes min_cells 0..9, in order
        assert line.strip().startswith(f"{i + 2}. scanpy.pp.filter_genes") and f"'min_cells': {i}" in line
    assert "'keys': ['X_a', 'X_b']" in lines[1] and "array(" not in out and "dtype=object" not in out


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_info_on_a_bad_file_is_one_clear_line_and_exit_2(tmp_path, kind):
    import subprocess
    import sys

    path = tmp_path / "missing.h5ad"
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("hello\n")
    elif kind == "folder":
        path = tmp_path / "dir.h5ad"
        path.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(__import__("pathlib").Path(sn.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "scnapse", "info", str(path)], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: ") and str(path.name) in res.stderr


def test_run_output_elsewhere_moves_relative_plots_with_it(tmp_path, monkeypatch):
    from scnapse.cli import _follow_output
    from scnapse.pipeline import Pipeline

    monkeypatch.chdir(tmp_path)
    pipe = Pipeline.from_dict({"input": "x.h5ad", "output": "results/out.h5ad", "steps": [
        {"scnapse.pl.loss": {"key": "autoencoder", "save": "results/loss.png"}},
        {"scnapse.pl.loss": {"key": "autoencoder", "save": "figs/loss2.png"}},
        {"scnapse.pl.loss": {"key": "autoencoder", "save": str(tmp_path / "abs.png")}},
    ]})
    _follow_output(pipe, "other/run2.h5ad")
    saves = [s.params["save"] for s in pipe.steps]
    assert pipe.output == "other/run2.h5ad"
    assert saves == [os.path.join("other", "loss.png"), os.path.join("other", "figs", "loss2.png"),
                     str(tmp_path / "abs.png")]
    _follow_output(pipe, "run3.h5ad")  # in the working directory
    assert pipe.steps[0].params["save"] == "loss.png"


@pytest.fixture
def log_lines():
    """The messages scnapse logs (at INFO) while the test runs."""
    import logging

    from scnapse._settings import logger

    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_run_logs_each_step_with_its_seconds(tmp_path, log_lines):
    import re

    from scnapse.pipeline import Pipeline

    Pipeline.from_yaml(_many_steps_pipeline(tmp_path)).run(write=False)
    starts = [m for m in log_lines if re.fullmatch(r"\[\d+/13\] scanpy\.\S+", m)]
    ends = [m for m in log_lines if re.fullmatch(r"\[\d+/13\] scanpy\.\S+ done in \d+\.\d s", m)]
    assert len(starts) == len(ends) == 13 and ends[-1].startswith("[13/13] scanpy.pp.log1p")


def test_training_steps_log_their_epochs(monkeypatch, log_lines):
    import re

    from conftest import make_counts

    from scnapse.pipeline import Pipeline, runner

    pipe = Pipeline.from_dict({"steps": [
        {"scanpy.pp.normalize_total": {}}, "scanpy.pp.log1p",
        {"step": "scnapse.tl.autoencoder", "id": "ae",
         "params": {"n_latent": 2, "hidden": [4], "max_epochs": 4, "early_stopping": 0, "pca_init": False}}]})
    monkeypatch.setattr(runner, "EPOCH_LOG_SECONDS", 1e9)  # only the first and the last epoch
    pipe.run(make_counts(n_obs=60, n_vars=20), write=False)
    pattern = r"  ae: epoch (\d)/4  train loss \S+  validation loss \S+  best epoch \d"
    assert [re.fullmatch(pattern, m).group(1) for m in log_lines if re.fullmatch(pattern, m)] == ["1", "4"]
    log_lines.clear()
    monkeypatch.setattr(runner, "EPOCH_LOG_SECONDS", 0.0)  # every epoch
    pipe.run(make_counts(n_obs=60, n_vars=20), write=False)
    assert [re.fullmatch(pattern, m).group(1) for m in log_lines if re.fullmatch(pattern, m)] == ["1", "2", "3", "4"]


def test_tune_counts_its_trials(lognorm_adata, log_lines):
    import re

    sn.tl.tune(lognorm_adata, space={"lr": {"log_uniform": [1e-3, 1e-2]}}, n_trials=3, sampler="random",
               fixed={"max_epochs": 2}, prune=False)
    trials = [m for m in log_lines if re.fullmatch(r"trial \d/3: val_loss = \S+ \(best \S+\) · \d+\.\d s", m)]
    assert [t.split(":")[0] for t in trials] == ["trial 1/3", "trial 2/3", "trial 3/3"]


def test_make_test_without_a_display_skips_gui_tests_with_the_reason():
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(sn.__file__).parents[1]), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-m", "pytest", "tests/napari", "-q", "-p", "no:cacheprovider"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "skipped" in res.stdout and "passed" not in res.stdout and "failed" not in res.stdout
    assert "need a display" in res.stdout and "xvfb-run" in res.stdout


def test_saved_models_get_the_usual_file_mode(tmp_path):
    from conftest import make_counts

    model = sn.models.Autoencoder(n_latent=2, hidden=[4], max_epochs=1, early_stopping=0, pca_init=False)
    model.fit(make_counts(n_obs=40, n_vars=8), progress=False)
    umask = os.umask(0o022)
    try:
        folder = model.save(tmp_path / "model")
    finally:
        os.umask(umask)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "model.safetensors"]  # no temporary file left
    assert all((folder / f).stat().st_mode & 0o777 == 0o644 for f in files)


def test_a_mistyped_step_name_gets_a_suggestion():
    from scnapse.pipeline import Pipeline, PipelineError

    with pytest.raises(PipelineError) as info:
        Pipeline.from_dict({"steps": [{"scanpy.pp.normalise_total": {}}]})
    assert "Did you mean 'scanpy.pp.normalize_total'?" in str(info.value)
    with pytest.raises(PipelineError, match=r"Did you mean 'scnapse\.tl\.autoencoder'\?"):
        Pipeline.from_dict({"steps": ["scnapse.tl.autoencodr"]})
    with pytest.raises(PipelineError, match="Registered steps: ") as info:  # nothing close: the list
        Pipeline.from_dict({"steps": ["scnapse.tl.zzzzzz"]})
    assert "Did you mean" not in str(info.value)


def test_every_bad_value_of_a_pipeline_is_reported_at_once():
    from scnapse.pipeline import Pipeline, PipelineError

    data = {"seed": -1, "steps": [
        {"scanpy.pp.normalise_total": {}},
        {"scnapse.tl.autoencoder": {"lr": -1, "dropout": 2, "early_stopping": None, "learning_rate": 3}},
        {"scnapse.pl.loss": {"ax": 1}},
    ]}
    with pytest.raises(PipelineError) as info:
        Pipeline.from_dict(data, where="p.yaml")
    msg = str(info.value)
    assert msg.startswith("p.yaml: 7 problems:\n")
    for part in ("seed=-1", "step 1 (normalise_total): Unknown step", "step 2 (autoencoder): lr=-1 must be > 0",
                 "dropout=2 must be <= 0.95", "early_stopping=None", "'learning_rate'. Did you mean 'lr'?",
                 "step 3 (loss): 'ax' cannot be set in a pipeline"):
        assert part in msg, part
    assert len(msg.splitlines()) == 8
    # a single problem stays one line, as before
    with pytest.raises(PipelineError, match=r"^p\.yaml: step 1 \(autoencoder\): dropout=2 must be <= 0\.95\.$"):
        Pipeline.from_dict({"steps": [{"scnapse.tl.autoencoder": {"dropout": 2}}]}, where="p.yaml")


def test_early_stopping_errors_say_that_0_turns_it_off():
    from scnapse.train import TrainConfig

    for bad in (None, -1, "no"):
        with pytest.raises(ValueError, match="0 turns early stopping off"):
            TrainConfig(early_stopping=bad)
    assert TrainConfig(early_stopping=0).early_stopping == 0


def test_an_unknown_option_lists_the_step_s_own_names_not_python_only_ones():
    from scnapse.pipeline import Pipeline, PipelineError
    from scnapse.pipeline.registry import get_step
    from scnapse.pipeline.schema import PYTHON_ONLY, step_options

    with pytest.raises(PipelineError) as info:
        Pipeline.from_dict({"steps": [{"scnapse.tl.autoencoder": {"zzzz": 1}}]})
    msg = str(info.value)
    listed = msg[msg.index("own parameters: [") + len("own parameters: "):msg.index("]") + 1]
    names = eval(listed)  # the list as printed
    assert "n_latent" in names and "hidden" in names and "save_model" not in names
    for name in (*PYTHON_ONLY, "lr", "dropout", "checkpoint_dir"):  # python-only / shared options: not listed
        assert name not in names
    assert len(names) < 20 and "TrainConfig" in msg
    own, train, run = step_options(get_step("scnapse.pl.loss"))
    assert "ax" not in own and "key" in own and train == run == []


def _run_cli(args, **kw):
    import pathlib
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pathlib.Path(sn.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False, **kw)


@pytest.mark.parametrize("command", [[], ["run"], ["tune"], ["info"], ["demo"], ["export"]])
def test_help_imports_neither_torch_nor_scanpy(command):
    res = _run_cli(["-X", "importtime", "-m", "scnapse", *command, "--help"])
    assert res.returncode == 0 and "usage: scnapse" in res.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "scanpy", "anndata", "numpy", "matplotlib"}, imported


def test_help_explains_positional_arguments_and_shows_examples():
    res = _run_cli(["-m", "scnapse", "--help"])
    assert "examples:" in res.stdout and "scnapse demo" in res.stdout and "scnapse info results/" in res.stdout
    for command, arg in [("run", "pipeline"), ("export", "pipeline"), ("info", "file"), ("tune", "file")]:
        out = _run_cli(["-m", "scnapse", command, "--help"]).stdout
        block = out[out.index("positional arguments:"):out.index("options:")]
        line = next(ln for ln in block.splitlines() if ln.strip().startswith(arg))
        help_text = (line.strip()[len(arg):] + block.split(line, 1)[1]).strip()
        assert len(help_text) > 20, (command, block)  # the argument has a help text
    assert "--output other/run2.h5ad" in _run_cli(["-m", "scnapse", "run", "--help"]).stdout


def _embedded(variational=False):
    import numpy as np
    import pandas as pd
    from conftest import make_counts

    adata = make_counts(n_obs=40, n_vars=10)
    rng = np.random.default_rng(0)
    adata.obs["cell_type"] = pd.Categorical(rng.choice(["T", "B"], adata.n_obs))
    adata.obsm["X_autoencoder"] = rng.normal(size=(adata.n_obs, 16))
    adata.obsm["X_pca"] = rng.normal(size=(adata.n_obs, 50))
    adata.obsm["X_umap"] = rng.normal(size=(adata.n_obs, 2))
    adata.uns["autoencoder"] = {"obsm_key": "X_autoencoder", "params": {"cost": "mse", "variational": variational},
                                "history": {"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5],
                                            "val_loss": [3.1, 2.2, 2.0], "best_epoch": 3}}
    adata.uns["neighbors"] = {"params": {"use_rep": "X_autoencoder", "n_neighbors": 15}}
    adata.uns["embedding_comparison"] = pd.DataFrame(
        {"dimensions": [16, 50], "knn15_accuracy": [0.8043, 0.8143]}, index=["X_autoencoder", "X_pca"])
    return adata


def test_demo_figures_have_readable_titles_that_say_what_the_autoencoder_added():
    import matplotlib.pyplot as plt

    adata = _embedded()
    ax = sn.pl.embedding(adata, basis="X_umap", color="cell_type", title="PBMC cell types")
    title = ax.get_title().splitlines()
    assert title == ["PBMC cell types", "UMAP of the autoencoder's 16-dimensional embedding (X_autoencoder)",
                     "15-NN accuracy of cell_type: 0.80 (vs PCA 0.81)"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("UMAP 1", "UMAP 2")  # not X_umap1
    ax = sn.pl.embedding(adata, basis="X_pca", color="cell_type")
    assert ax.get_title().splitlines()[:2] == ["cell_type", "first two dimensions of PCA (50 components)"]
    assert ax.get_xlabel() == "PCA 1"
    ax = sn.pl.loss(adata, "autoencoder")
    assert ax.get_title() == "Autoencoder training: loss per epoch"
    assert ax.get_ylabel() == "loss: mean squared error (mse)"
    ax = sn.pl.loss(_embedded(variational=True), "autoencoder")
    assert ax.get_ylabel() == "loss: mean squared error (mse) + β·KL"
    adata.uns["autoencoder"]["params"]["batch_mmd"] = 0.01
    assert sn.pl.loss(adata, "autoencoder").get_ylabel() == "loss: mean squared error (mse) + batch MMD"
    plt.close("all")


def test_the_sample_pipeline_titles_its_figure():
    from scnapse.datasets import sample_path
    from scnapse.pipeline import Pipeline

    pipe = Pipeline.from_yaml(sample_path("pbmc_autoencoder.yaml"))
    (plot,) = [s for s in pipe.steps if s.name == "scnapse.pl.embedding"]
    assert plot.params["title"] == "PBMC cell types (bulk_labels)"


def test_make_install_shows_progress():
    import pathlib
    import re

    makefile = (pathlib.Path(__file__).parents[1] / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP): pyproject.toml"):makefile.index("touch $(STAMP)")]
    installs = [ln for ln in recipe.splitlines() if re.search(r"pip install .*(torch|-e )", ln)]
    assert len(installs) == 2
    for line in installs:  # the long downloads are not silenced; each is announced first
        assert "--quiet" not in line and " -q" not in line
    assert recipe.count("@echo") >= 2
