"""Pipeline files from someone else: never code, never overwriting what scnapse did not write,
no partial files left behind, every write listed (and confinable), clear errors."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time

import anndata as ad
import h5py
import numpy as np
import pytest
import yaml

import scnapse as sn
from scnapse.cli import main
from scnapse.pipeline import Pipeline, PipelineError, Step, export_script
from scnapse.pipeline.safety import check_writes, is_scnapse_h5ad
from scnapse.pipeline.writer import remove_stale_temporaries, write_h5ad_atomic

PAYLOAD = 'x"""\nimport os; os.system("touch pwned")\n"""\'\'\'\\ \' " \\n'


def _evil(tag: str) -> str:
    return f"{tag}{PAYLOAD}"  # no '/': it is also a file and column name


def _tiny_input(path):
    sn.datasets.pbmc68k().write_h5ad(path)
    return str(path)


def _calls(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


def test_export_with_injection_in_every_field_does_only_what_the_pipeline_says(tmp_path, monkeypatch):
    src = _tiny_input(tmp_path / (_evil("in") + ".h5ad"))
    pipe = Pipeline.from_dict({
        "name": _evil("name"),
        "input": src,
        "output": _evil("out") + ".h5ad",
        "seed": 1,
        "steps": [
            {"step": "scanpy.pp.normalize_total", "id": _evil("norm"),
             "params": {"target_sum": 1e4, "key_added": _evil("size")}},
            "scanpy.pp.log1p",
            {"step": "scnapse.tl.train_classifier", "id": _evil("clf"),
             "params": {"labels_key": "bulk_labels", "max_epochs": 1, "save_model": _evil("model")}},
            {"step": "scnapse.tl.annotate", "params": {"model": _evil("clf"), "key_added": _evil("pred")}},
        ],
    })
    script = export_script(pipe)
    tree = ast.parse(script)
    assert ast.get_docstring(tree, clean=False).startswith(_evil("name"))
    # exactly the statements asked for: docstring, 3 imports, input, 4 steps, save, write
    assert len(tree.body) == 11
    assert sum(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body) == 3
    assert _calls(tree) == {"load_input", "scanpy.pp.normalize_total", "scanpy.pp.log1p", "scnapse.tl.train_classifier",
                            f"{_var_of(tree)}.save", "scnapse.tl.annotate", "write_h5ad_atomic"}
    path = tmp_path / "analysis.py"
    path.write_text(script)
    subprocess.run([sys.executable, str(path)], check=True, cwd=tmp_path, capture_output=True)
    assert not (tmp_path / "pwned").exists()
    from_script = ad.read_h5ad(tmp_path / (_evil("out") + ".h5ad"))
    assert (tmp_path / _evil("model") / "config.json").exists()
    monkeypatch.chdir(tmp_path)
    from_run = Pipeline.from_dict({**yaml.safe_load(pipe.to_yaml()), "output": None}).run(write=False)
    assert not (tmp_path / "pwned").exists()
    assert list(from_script.obs[_evil("pred")]) == list(from_run.obs[_evil("pred")])
    np.testing.assert_array_equal(from_script.obsm[_evil("pred") + "_probabilities"],
                                  from_run.obsm[_evil("pred") + "_probabilities"])
    assert np.allclose(from_script.X.toarray(), from_run.X.toarray())


def _var_of(tree) -> str:
    """The name the script gives the trained model (the only assignment besides the input)."""
    targets = [s.targets[0] for s in tree.body if isinstance(s, ast.Assign)]
    return next(t.id for t in targets if isinstance(t, ast.Name))


def test_export_of_unvalidated_keys_and_values_stays_literal():
    pipe = Pipeline(steps=[Step("scanpy.pp.log1p", {_evil("key"): [_evil("v"), {"k": float("nan")}],
                                                    "base": float("inf")}, id=_evil("id"))],
                    input={"dataset": "pbmc68k", _evil("k"): _evil("v")}, name=_evil("n"), output=_evil("o"))
    tree = ast.parse(export_script(pipe))
    assert _calls(tree) == {"load_input", "scanpy.pp.log1p", "float", "write_h5ad_atomic"}
    assert len(tree.body) == 7
    with pytest.raises(PipelineError, match="as a Python literal"):
        export_script(Pipeline(steps=[Step("scanpy.pp.log1p", {"base": object()}, id="a")]))


LOG1P = {"name": "tiny", "steps": ["scanpy.pp.log1p"]}


def test_output_never_replaces_a_file_scnapse_did_not_write(tmp_path):
    src = _tiny_input(tmp_path / "in.h5ad")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    pipe = Pipeline.from_dict({**LOG1P, "input": src, "output": str(notes)})
    with pytest.raises(PipelineError, match=r"notes\.txt.*not written by scnapse.*--overwrite"):
        pipe.run()
    assert notes.read_text() == "my notes"
    plain = tmp_path / "plain.h5ad"  # an .h5ad, but not one scnapse wrote
    sn.datasets.pbmc68k()[:5].copy().write_h5ad(plain)
    assert not is_scnapse_h5ad(plain) and not is_scnapse_h5ad(notes)
    with pytest.raises(PipelineError, match="plain.h5ad"):
        pipe.run(output=plain)
    mine = tmp_path / "mine.h5ad"
    pipe.run(output=mine)
    assert is_scnapse_h5ad(mine)
    pipe.run(output=mine)  # its own output is replaced
    pipe.run(overwrite=True)
    assert is_scnapse_h5ad(notes)


def test_save_model_never_replaces_a_folder_scnapse_did_not_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_input(tmp_path / "in.h5ad")
    other = tmp_path / "project"
    other.mkdir()
    (other / "config.json").write_text('{"kind": "my own settings"}')
    pipe = {"input": "in.h5ad", "output": "out.h5ad", "steps": [
        {"step": "scnapse.tl.train_classifier", "id": "clf",
         "params": {"labels_key": "bulk_labels", "max_epochs": 1, "save_model": "project"}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipe))
    assert main(["run", "p.yaml"]) == 2
    assert json.loads((other / "config.json").read_text()) == {"kind": "my own settings"}
    assert not (tmp_path / "out.h5ad").exists()  # refused before anything ran
    with pytest.raises(PipelineError, match=r"'project'.*not a scnapse model.*--overwrite"):
        Pipeline.from_yaml("p.yaml").run()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PipelineError, match="existing file"):
        check_writes([("model", "afile")])
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.json").write_text('{"format": "scnapse-model", "kind": "CellClassifier"}')
    check_writes([("model", str(ours))])  # a scnapse model may be replaced
    assert main(["run", "p.yaml", "--overwrite"]) == 0
    assert json.loads((other / "config.json").read_text())["format"] == "scnapse-model"


def test_stale_temporary_files_are_removed_on_the_next_write(tmp_path):
    out = tmp_path / "out.h5ad"
    stale = tmp_path / ".out.h5ad.ab_cd123.tmp"
    fresh = tmp_path / ".out.h5ad.zz99zz99.tmp"  # maybe a write in progress: kept
    others = [tmp_path / ".out.h5ad.short.tmp", tmp_path / ".other.h5ad.ab_cd123.tmp", tmp_path / "ab_cd123.tmp"]
    for p in (stale, fresh, *others):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    for p in (stale, *others):
        os.utime(p, (old, old))
    write_h5ad_atomic(sn.datasets.pbmc68k()[:5].copy(), out)
    assert out.exists() and not stale.exists()
    assert fresh.exists() and all(p.exists() for p in others)
    assert remove_stale_temporaries(out, older_than=0) == [str(fresh)]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from scnapse.pl._loss import _finish

    target = tmp_path / "loss.png"
    target.write_bytes(b"previous plot")

    def crash(self, fname, **kw):
        with open(fname, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(KeyboardInterrupt):
        _finish(plt.figure(), str(target), False)
    assert target.read_bytes() == b"previous plot" and sorted(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    _finish(plt.figure(), str(target), False)
    assert target.read_bytes()[:4] == b"\x89PNG" and sorted(tmp_path.iterdir()) == [target]
    _finish(plt.figure(), str(tmp_path / "noext"), False)  # as savefig: the default format's extension
    assert (tmp_path / "noext.png").exists()


def test_dry_run_lists_every_write_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image = sn.datasets.sample_path("images/dsb2018_nuclei_img.tif")
    labels = sn.datasets.sample_path("images/dsb2018_nuclei_labels.tif")
    pipe = {"input": {"image": str(image), "labels": str(labels), "size": 16, "crops_file": "crops"},
            "output": "res/out.h5ad", "steps": [
                {"step": "scnapse.tl.image_embedding", "params": {"max_epochs": 1, "n_latent": 2}},
                {"scnapse.pl.loss": {"key": "image_embedding", "save": "plots/loss.png"}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipe))
    assert Pipeline.from_yaml("p.yaml").writes() == [("crops", "crops.npy"), ("plot", "plots/loss.png"),
                                                     ("output", "res/out.h5ad")]
    assert main(["run", "p.yaml", "--dry-run", "--set", "steps.image_embedding.checkpoint_dir=ck"]) == 0
    text = capsys.readouterr().out
    for path in ("crops.npy", "plots/loss.png", "res/out.h5ad", "ck"):
        assert repr(path) in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


@pytest.mark.parametrize("where", ["../out.h5ad", "/tmp/scnapse-out.h5ad", "sub/../../out.h5ad"])
def test_confine_refuses_writes_outside_the_pipeline_folder(tmp_path, monkeypatch, capsys, where):
    folder = tmp_path / "from_a_colleague"
    folder.mkdir()
    monkeypatch.chdir(folder)
    _tiny_input(folder / "in.h5ad")
    (folder / "p.yaml").write_text(yaml.safe_dump({**LOG1P, "input": "in.h5ad", "output": where}))
    assert main(["run", "p.yaml", "--confine", "--dry-run"]) == 2
    assert "outside" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="outside"):
        Pipeline.from_yaml("p.yaml").run(confine=True)
    for inside in ("out.h5ad", "sub/../out.h5ad", str(folder / "res" / "out.h5ad")):
        assert main(["run", "p.yaml", "--confine", "--dry-run", "--output", inside]) == 0


def test_info_on_a_missing_or_foreign_file_says_so(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    for name, match in (("missing.h5ad", "does not exist"), ("notes.txt", "not an .h5ad file"),
                        ("other.h5", "not a readable .h5ad")):
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err


def test_tuning_file_errors_are_clear(tmp_path, capsys):
    from scnapse.pipeline import tune_from_yaml

    with pytest.raises(FileNotFoundError, match="does not exist"):
        tune_from_yaml(tmp_path / "nope.yaml")
    assert main(["tune", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    evil = tmp_path / "evil.yaml"
    evil.write_text("pipeline: !!python/object/apply:os.system ['touch pwned']\ntune: x\n")
    with pytest.raises(PipelineError, match="!!python"):
        tune_from_yaml(evil)
    assert main(["tune", str(evil)]) == 2
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_image_input_whose_crops_file_cannot_be_written(tmp_path):
    from scnapse.pipeline import load_input

    image = str(sn.datasets.sample_path("images/dsb2018_nuclei_img.tif"))
    labels = str(sn.datasets.sample_path("images/dsb2018_nuclei_labels.tif"))
    spec = {"image": image, "labels": labels, "size": 16, "crops_file": str(tmp_path / "no" / "such" / "c")}
    pipe = Pipeline.from_dict({"input": spec, "output": str(tmp_path / "o.h5ad"), "steps": ["scanpy.pp.log1p"]})
    with pytest.raises(PipelineError, match="crops.*does not exist"):
        pipe.run()
    with pytest.raises(PipelineError, match="crops_file.*cannot be written"):
        load_input(spec)


def test_image_input_with_crops_file_writes_its_output(tmp_path):
    image = str(sn.datasets.sample_path("images/dsb2018_nuclei_img.tif"))
    labels = str(sn.datasets.sample_path("images/dsb2018_nuclei_labels.tif"))
    spec = {"image": image, "labels": labels, "size": 16, "crops_file": str(tmp_path / "crops")}
    out = tmp_path / "cells.h5ad"
    cells = Pipeline.from_dict({"input": spec, "output": str(out),
                                "steps": [{"scanpy.pp.neighbors": {"use_rep": "spatial", "n_neighbors": 5}}]}).run()
    back = ad.read_h5ad(out)
    np.testing.assert_array_equal(back.obsm["crops"], np.asarray(cells.obsm["crops"]))
    crops = cells.obsm["crops"]  # still read from the file: a view of the memory map
    assert isinstance(crops, np.memmap) or isinstance(crops.base, np.memmap)
