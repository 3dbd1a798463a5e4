"""Pipeline files: the bundled demo on real data, validation, --set, export, atomic output, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml

import scnapse as sn
from scnapse.cli import main
from scnapse.pipeline import Pipeline, PipelineError, export_script

SMALL = {
    "name": "small",
    "input": {"dataset": "pbmc68k"},
    "seed": 3,
    "steps": [
        {"scanpy.pp.normalize_total": {"target_sum": 10000}},
        "scanpy.pp.log1p",
        {"step": "scnapse.tl.autoencoder", "id": "ae", "params": {"n_latent": 4, "max_epochs": 3}},
    ],
}


def test_demo_pipeline_on_real_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output-dir", "out"]) == 0
    out = ad.read_h5ad(tmp_path / "out" / "pbmc_autoencoder.h5ad")
    assert out.obsm["X_autoencoder"].shape == (700, 16)
    for key in ("X_pca", "X_umap"):
        assert key in out.obsm
    assert out.obs["leiden"].nunique() > 3
    table = out.uns["embedding_comparison"]
    # biology: both embeddings keep the 10 PBMC types apart far above chance (~0.2)
    assert table.loc["X_autoencoder", "knn15_accuracy"] > 0.75
    assert table.loc["X_pca", "knn15_accuracy"] > 0.75
    assert (tmp_path / "out" / "loss_autoencoder.png").stat().st_size > 1000
    assert (tmp_path / "out" / "umap_autoencoder.png").stat().st_size > 1000
    prov = out.uns["scnapse"]
    assert len(prov["input_sha256"]) == 64 and prov["seed"] == 0
    assert "scnapse.tl.autoencoder" in prov["pipeline"]


def test_rerun_is_bit_identical():
    a = Pipeline.from_dict(SMALL).run(write=False)
    b = Pipeline.from_dict(SMALL).run(write=False)
    assert np.array_equal(a.obsm["X_autoencoder"], b.obsm["X_autoencoder"])
    assert a.uns["autoencoder"]["params"]["seed"] == 3  # the pipeline's seed reaches the step


def test_set_changes_a_parameter_and_is_validated():
    pipe = Pipeline.from_dict(SMALL)
    pipe.set("steps.ae.lr=3e-4")
    assert pipe.steps[2].params["lr"] == pytest.approx(3e-4)
    with pytest.raises(PipelineError, match="no step with id 'nope'"):
        pipe.set("steps.nope.lr=1")
    with pytest.raises(PipelineError, match="optimizer"):
        pipe.set("steps.ae.optimizer=adamax")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["steps"].append("os.system"), r"step 4 .*Unknown step 'os.system'"),
        (lambda d: d["steps"][2]["params"].update(n_latnet=3), r"step 3 \(ae\): unknown parameter 'n_latnet'"),
        (lambda d: d["steps"][2]["params"].update(n_latent="ten"), "n_latent='ten' must be an integer"),
        (lambda d: d["steps"][2]["params"].update(lr=-1), "lr=-1"),
        (lambda d: d.update(steps=[]), "non-empty list"),
        (lambda d: d.update(outptu="x"), "unknown top-level key"),
    ],
)
def test_validation_names_the_step_and_the_fix(change, match):
    data = yaml.safe_load(yaml.safe_dump(SMALL))
    change(data)
    with pytest.raises(PipelineError, match=match):
        Pipeline.from_dict(data)


def test_output_is_atomic_and_never_the_input(tmp_path, monkeypatch):
    pipe = Pipeline.from_dict({**SMALL, "output": str(tmp_path / "out.h5ad")})

    def crash(self, *a, **k):
        Path(a[0]).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", crash)
    with pytest.raises(KeyboardInterrupt):
        pipe.run()
    assert list(tmp_path.iterdir()) == []  # no half-written output, no temp file left
    monkeypatch.undo()
    src = tmp_path / "in.h5ad"
    sn.datasets.pbmc68k().write_h5ad(src)
    with pytest.raises(PipelineError, match="never overwrites its input"):
        Pipeline.from_dict({**SMALL, "input": str(src), "output": str(src)}).run()


def test_exported_script_gives_the_same_output(tmp_path):
    pipe = Pipeline.from_dict({**SMALL, "output": str(tmp_path / "script.h5ad")})
    script = tmp_path / "analysis.py"
    script.write_text(export_script(pipe))
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, capture_output=True)
    from_script = ad.read_h5ad(tmp_path / "script.h5ad")
    from_run = pipe.run(write=False)
    assert np.array_equal(from_script.obsm["X_autoencoder"], from_run.obsm["X_autoencoder"])
    assert np.allclose(from_script.X.toarray(), from_run.X.toarray())


def test_cli_run_set_output_and_info(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**SMALL, "output": "a.h5ad"}))
    assert main(["run", "p.yaml", "--set", "steps.ae.n_latent=2", "--output", "b.h5ad"]) == 0
    out = ad.read_h5ad(tmp_path / "b.h5ad")
    assert out.obsm["X_autoencoder"].shape[1] == 2 and not (tmp_path / "a.h5ad").exists()
    capsys.readouterr()
    assert main(["info", "b.h5ad"]) == 0
    text = capsys.readouterr().out
    assert "scnapse.tl.autoencoder" in text and "n_latent" in text and "torch" in text
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**SMALL, "steps": ["scanpy.pp.nope"]}))
    assert main(["run", "bad.yaml"]) == 2
    assert "Unknown step 'scanpy.pp.nope'" in capsys.readouterr().err


def test_csv_and_10x_mtx_inputs(tmp_path):
    import gzip

    import pandas as pd
    from scipy import io, sparse

    from scnapse.pipeline import load_input

    adata = sn.datasets.pbmc68k()[:50, :30].copy()
    dense = adata.X.toarray()
    pd.DataFrame(dense, index=adata.obs_names, columns=adata.var_names).to_csv(tmp_path / "cells.csv")
    from_csv, _ = load_input(str(tmp_path / "cells.csv"))
    assert from_csv.shape == (50, 30) and np.allclose(from_csv.X, dense)
    mtx = tmp_path / "filtered_feature_bc_matrix"
    mtx.mkdir()
    io.mmwrite(str(mtx / "matrix.mtx"), sparse.csr_matrix(dense.T))  # 10x stores genes × cells
    for name, lines in (("features.tsv", [f"{g}\t{g}\tGene Expression" for g in adata.var_names]),
                        ("barcodes.tsv", list(adata.obs_names))):
        (mtx / name).write_text("\n".join(lines) + "\n")
    for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
        with open(mtx / name, "rb") as src, gzip.open(mtx / f"{name}.gz", "wb") as dst:
            dst.write(src.read())
        (mtx / name).unlink()
    from_mtx, _ = load_input(str(mtx))
    assert from_mtx.shape == (50, 30) and np.allclose(from_mtx.X.toarray(), dense)
    with pytest.raises(PipelineError, match="unsupported type"):
        (tmp_path / "x.parquet").write_text("")
        load_input(str(tmp_path / "x.parquet"))


def test_a_tracks_input_makes_one_sequence_per_track(tmp_path):
    import pandas as pd

    from scnapse.pipeline import load_input
    from scnapse.ts import from_tracks

    table = pd.DataFrame({"track_id": [1, 1, 1, 2, 2, 3, 3], "frame": [0.0, 1, 2, 0, 1, 2, 3],
                          "y": [0.5, 1.25, 2.0, 5.0, 5.5, 1.0, 1.5], "x": [3.0, 3.5, 4.0, 0.0, 0.1, 2.0, 2.5],
                          "fate": ["a", "a", "a", "b", "b", "a", "a"]})
    path = tmp_path / "tracks.csv"
    table.to_csv(path, index=False)
    seqs, source = load_input({"tracks": str(path), "graph": {2: [1], 3: [1]}})
    expected = from_tracks(table, graph={2: [1], 3: [1]})
    assert source == path and list(seqs.obs_names) == ["1", "2", "3"]
    np.testing.assert_array_equal(seqs.obsm["sequence"], expected.obsm["sequence"])
    assert list(seqs.obs["fate"]) == ["a", "b", "a"] and list(seqs.obs["n_children"]) == [2, 0, 0]
    (tmp_path / "cells.h5ad").touch()
    with pytest.raises(PipelineError, match="tracks input is a .csv"):
        load_input({"tracks": str(tmp_path / "cells.h5ad")})
    with pytest.raises(PipelineError, match="unexpected keyword"):
        load_input({"tracks": str(path), "n_frames": 3})
