"""Every scnapse step in a pipeline: trained models passed between steps, bit-identical re-runs
on the CPU, and the exported script doing the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scnapse as sn
from scnapse.pipeline import MODEL_STEPS, Pipeline, PipelineError, export_script, step_names


def _same(a, b):
    for key in b.obsm:
        np.testing.assert_array_equal(np.asarray(a.obsm[key]), np.asarray(b.obsm[key]), err_msg=key)
    for col in b.obs.columns:
        pd.testing.assert_series_equal(a.obs[col], b.obs[col])


def _rerun(pipeline: dict, adata):
    one = Pipeline.from_dict(pipeline).run(adata.copy(), write=False)
    two = Pipeline.from_dict(pipeline).run(adata.copy(), write=False)
    _same(one, two)
    return one


FAST = {"max_epochs": 2}


def test_expression_steps_rerun_bit_identical(lognorm_adata):
    out = _rerun({"steps": [
        {"step": "scnapse.tl.autoencoder", "params": {**FAST, "n_latent": 3}},
        {"step": "scnapse.tl.autoencoder", "id": "vae", "params": {**FAST, "variational": True, "key_added": "X_vae"}},
        {"step": "scnapse.tl.train_classifier", "id": "clf", "params": {**FAST, "labels_key": "cell_type"}},
        {"step": "scnapse.tl.annotate", "params": {"model": "clf", "key_added": "pred"}},
        {"step": "scnapse.tl.compare_embeddings", "params": {"keys": ["X_autoencoder"], "labels_key": "cell_type"}},
    ]}, lognorm_adata)
    assert {"X_autoencoder", "X_vae", "pred_probabilities"} <= set(out.obsm)
    assert "pred" in out.obs


def test_image_steps_rerun_bit_identical():
    image, labels, classes = sn.im.synthetic_image(8, seed=0)
    cells = sn.im.cells_from_labels(image, labels, size=16)
    cls = pd.Series(classes, index=cells.obs["label"].to_numpy()) if len(classes) == cells.n_obs else None
    cells.obs["annotation"] = pd.Categorical([str(c) for c in (cls.to_numpy() if cls is not None else classes)])
    out = _rerun({"steps": [
        {"step": "scnapse.tl.image_embedding", "params": {**FAST, "n_latent": 4}},
        {"step": "scnapse.tl.train_image_classifier", "id": "img", "params": {**FAST, "labels_key": "annotation"}},
        {"step": "scnapse.tl.annotate_images", "params": {"model": "img", "key_added": "predicted_class"}},
    ]}, cells)
    assert "X_cnn" in out.obsm and "predicted_class" in out.obs


def test_sequence_steps_rerun_bit_identical():
    seqs = sn.ts.simulate_oscillations(40, max_length=20, min_length=12, seed=0) if hasattr(sn.ts, "simulate_oscillations") \
        else __import__("scnapse.ts._synthetic", fromlist=["x"]).simulate_oscillations(40, max_length=20, min_length=12)
    out = _rerun({"steps": [
        {"step": "scnapse.tl.sequence_embedding", "params": {**FAST, "n_latent": 3}},
        {"step": "scnapse.tl.train_sequence_classifier", "id": "seq", "params": {**FAST, "labels_key": "label"}},
        {"step": "scnapse.tl.annotate_sequences", "params": {"model": "seq", "key_added": "pred"}},
        {"step": "scnapse.tl.train_forecaster", "id": "fc", "params": {**FAST, "horizon": 2}},
        {"step": "scnapse.tl.forecast", "params": {"model": "fc"}},
    ]}, seqs)
    assert "X_rnn" in out.obsm and "forecast" in out.obsm and "pred" in out.obs


def test_every_registered_scnapse_training_step_is_covered():
    import inspect

    covered = {"scnapse.tl.autoencoder", "scnapse.tl.train_classifier", "scnapse.tl.annotate",
               "scnapse.tl.image_embedding", "scnapse.tl.train_image_classifier", "scnapse.tl.annotate_images",
               "scnapse.tl.sequence_embedding", "scnapse.tl.train_sequence_classifier",
               "scnapse.tl.annotate_sequences", "scnapse.tl.train_forecaster", "scnapse.tl.forecast",
               "scnapse.tl.compare_embeddings", "scnapse.tl.integration_metrics",
               "scnapse.tl.compare_runs",  # tests/test_compare_runs.py
               "scnapse.tl.map_query"}  # tests/test_batches.py
    steps = {n for n in step_names() if n.startswith("scnapse.tl.")}
    assert steps <= covered | {"scnapse.tl.tune"}, steps - covered
    assert set(MODEL_STEPS) <= steps
    for name in steps:
        assert inspect.isfunction(eval(name.replace("scnapse", "sn", 1)))


def test_model_saved_by_a_pipeline_is_used_by_another(tmp_path, lognorm_adata):
    train = {"steps": [{"step": "scnapse.tl.train_classifier", "id": "clf",
                        "params": {**FAST, "labels_key": "cell_type", "save_model": str(tmp_path / "clf")}}]}
    Pipeline.from_dict(train).run(lognorm_adata.copy())
    assert (tmp_path / "clf" / "model.safetensors").exists()
    use = {"steps": [{"scnapse.tl.annotate": {"model": str(tmp_path / "clf"), "key_added": "p"}}]}
    out = Pipeline.from_dict(use).run(lognorm_adata.copy(), write=False)
    assert out.obs["p"].notna().all()
    with pytest.raises(PipelineError, match="must name an earlier training step"):
        Pipeline.from_dict({"steps": [{"scnapse.tl.annotate": {"model": "clf"}}]})


def test_export_of_model_steps_runs_the_same(tmp_path, lognorm_adata):
    import subprocess
    import sys

    import anndata as ad

    src = tmp_path / "in.h5ad"
    lognorm_adata.write_h5ad(src)
    pipe = Pipeline.from_dict({"input": str(src), "output": str(tmp_path / "script.h5ad"), "steps": [
        {"step": "scnapse.tl.train_classifier", "id": "clf", "params": {**FAST, "labels_key": "cell_type"}},
        {"scnapse.tl.annotate": {"model": "clf", "key_added": "p"}}]})
    (tmp_path / "a.py").write_text(export_script(pipe))
    subprocess.run([sys.executable, str(tmp_path / "a.py")], check=True, cwd=tmp_path, capture_output=True)
    _same(ad.read_h5ad(tmp_path / "script.h5ad"), pipe.run(write=False))


def test_image_input_in_a_pipeline(tmp_path):
    import tifffile

    image, labels, _ = sn.im.synthetic_image(4, seed=1)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    pipe = Pipeline.from_dict({"input": {"image": str(tmp_path / "img.tif"), "labels": str(tmp_path / "lab.tif"),
                                         "size": 16},
                               "steps": [{"scnapse.tl.image_embedding": {**FAST, "n_latent": 2}}]})
    out = pipe.run(write=False)
    assert out.obsm["X_cnn"].shape == (int(labels.max()), 2)


def test_models_load_knows_every_kind(tmp_path, lognorm_adata):
    ae = sn.models.Autoencoder(2, max_epochs=1).fit(lognorm_adata, progress=False)
    ae.save(tmp_path / "ae")
    loaded = sn.models.load(tmp_path / "ae")
    assert isinstance(loaded, sn.models.Autoencoder)
    np.testing.assert_array_equal(loaded.transform(lognorm_adata), ae.transform(lognorm_adata))
    with pytest.raises(ValueError, match="not a scnapse model"):
        (tmp_path / "x").mkdir()
        sn.models.load(tmp_path / "x")
