"""batch_key, map_query and integration_metrics as pipeline steps: a file re-runs bit-identically on the CPU."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

import scnapse as sn
from scnapse.cli import main
from scnapse.models.autoencoder import map_query_epochs
from scnapse.pipeline import Pipeline
from scnapse.pipeline.registry import PipelineError



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    full = sn.datasets.simulated_batches(240, n_genes=60, n_batches=3, n_cell_types=3, seed=0)
    full.write_h5ad(root / "full.h5ad")
    ref = full[full.obs["batch"] != "batch2"].copy()
    sn.models.Autoencoder(4, hidden=(16,), batch_key="batch", max_epochs=3, seed=0).fit(ref, progress=False) \
        .save(root / "reference")
    spec = {
        "name": "batches",
        "input": str(root / "full.h5ad"),
        "seed": 1,
        "device": "cpu",
        "steps": [
            {"scnapse.tl.autoencoder": {"batch_key": "batch", "n_latent": 4, "hidden": [16], "max_epochs": 3,
                                        "key_added": "X_integrated"}},
            {"scnapse.tl.map_query": {"model": str(root / "reference"), "max_epochs": 5, "key_added": "X_mapped"}},
        ],
    }
    path = root / "batches.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    spec["steps"].append(
        {"scnapse.tl.integration_metrics": {"keys": ["X_integrated", "X_mapped"], "batch_key": "batch",
                                            "labels_key": "cell_type", "kbet": False, "n_comps": 10}})
    metrics = root / "batches_metrics.yaml"
    metrics.write_text(yaml.safe_dump(spec, sort_keys=False))
    return root, path, metrics


def _run_twice(path, out):
    a = Pipeline.from_yaml(path).run(write=False)
    assert main(["run", str(path), "--output", str(out)]) == 0
    b = ad.read_h5ad(out)
    for key in ("X_integrated", "X_mapped"):
        assert a.obsm[key].shape == (240, 4)
        assert np.array_equal(a.obsm[key], b.obsm[key]), key
    return a, b


def test_batch_key_and_map_query_in_a_pipeline_file_rerun_bit_identical(files):
    root, path, _ = files
    a, b = _run_twice(path, root / "out.h5ad")
    assert a.uns["X_integrated"]["params"]["batch_key"] == "batch"
    assert list(a.uns["X_integrated"]["params"]["batches"]) == ["batch0", "batch1", "batch2"]
    info = a.uns["X_mapped"]["params"]["map_query"]
    assert list(info["new_batches"]) == ["batch2"] and list(info["reference_batches"]) == ["batch0", "batch1"]
    assert not np.array_equal(a.obsm["X_integrated"], a.obsm["X_mapped"])


def test_map_query_options_in_a_pipeline_file(files, tmp_path):
    root, _, _ = files
    steps = [{"scnapse.tl.map_query": {"model": str(root / "reference"), "max_epochs": None, "batch_mmd": 0.5,
                                       "init": "zeros", "batch_size": 64, "key_added": "X_mapped"}}]
    spec = {"input": str(root / "full.h5ad"), "seed": 1, "device": "cpu", "steps": steps}
    a = Pipeline.from_dict(spec).run(write=False)
    info = a.uns["X_mapped"]["params"]["map_query"]
    n_new = int((a.obs["batch"] == "batch2").sum())
    assert info["init"] == "zeros" and info["batch_mmd"] == 0.5
    assert int(info["epochs"]) == map_query_epochs(n_new, 64) == len(info["loss"])
    for bad, match in [({"init": "random"}, "init='random' must be one of 'mean', 'zeros'"),
                       ({"max_epochs": "ten"}, "max_epochs='ten' must be an integer"),
                       ({"batch_mmd": "strong"}, "batch_mmd='strong' must be a number")]:
        wrong = {**spec, "steps": [{"scnapse.tl.map_query": {**steps[0]["scnapse.tl.map_query"], **bad}}]}
        with pytest.raises(PipelineError, match=match):
            Pipeline.from_dict(wrong)


@pytest.mark.slow  # scib-metrics compiles its metrics on first use (about a minute on one core)
def test_integration_metrics_step_reruns_to_the_same_table(files):
    pytest.importorskip("scib_metrics")
    root, _, path = files
    a, b = _run_twice(path, root / "out_metrics.h5ad")
    ta, tb = a.uns["integration_metrics"], b.uns["integration_metrics"]
    assert list(ta.index) == ["X_integrated", "X_mapped"]
    pd.testing.assert_frame_equal(ta.drop(columns="seconds"), pd.DataFrame(tb).drop(columns="seconds"),
                                  check_exact=True)
    assert ta["Total"].between(0, 1).all()
