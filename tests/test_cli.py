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
                         env=env, timeout=120)
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


def test_run_logs_each_step_with_its_seconds(tmp_path):
    import logging

    from scnapse._settings import logger
    from scnapse.pipeline import Pipeline

    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        Pipeline.from_yaml(_many_steps_pipeline(tmp_path)).run(write=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    import re

    ends = [m for m in records if re.fullmatch(r"\[\d+/13\] scanpy\.\S+ … \d+\.\d s", m)]
    assert len(ends) == 13 and ends[-1].startswith("[13/13] scanpy.pp.log1p")


def test_make_test_without_a_display_skips_gui_tests_with_the_reason():
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(sn.__file__).parents[1]), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-m", "pytest", "tests/napari", "-q", "-p", "no:cacheprovider"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "skipped" in res.stdout and "passed" not in res.stdout and "failed" not in res.stdout
    assert "need a display" in res.stdout and "xvfb-run" in res.stdout
