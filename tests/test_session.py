"""The session recorder (what a GUI ran, as a pipeline) and the step registry, without Qt."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import scnapse as sn
from scnapse.pipeline import (
    MODEL_STEPS, ModelRef, Pipeline, PipelineError, Session, get_step, public_name, register_step, step_names,
)
from scnapse.pipeline import registry


def test_session_records_unique_ids_and_becomes_a_pipeline():
    session = Session(input={"dataset": "pbmc68k"}, seed=4)
    session.record("scanpy.pp.log1p", {})
    session.record("scnapse.tl.autoencoder", {"n_latent": 3, "max_epochs": 2}, step_id="ae")
    session.record("scnapse.tl.autoencoder", {"n_latent": 2, "max_epochs": 2}, step_id="ae")
    pipe = session.to_pipeline(output="out.h5ad")
    assert isinstance(pipe, Pipeline) and pipe.seed == 4 and pipe.output == "out.h5ad"
    assert [s.id for s in pipe.steps] == ["log1p", "ae", "ae_2"]
    assert pipe.steps[2].params == {"n_latent": 2, "max_epochs": 2, "threads": sn._settings.resolve_threads()}


def test_session_saves_its_models_beside_the_pipeline(tmp_path, lognorm_adata):
    session = Session(input=str(tmp_path / "in.h5ad"))
    lognorm_adata.write_h5ad(tmp_path / "in.h5ad")
    model = sn.tl.train_classifier(lognorm_adata, labels_key="cell_type", max_epochs=2, progress=False)
    name = session.add_model("classifier", model)
    assert session.add_model("classifier", model) == "classifier_2"  # a second one does not replace it
    session.record("scnapse.tl.annotate", {"model": ModelRef(name), "key_added": "p"})
    with pytest.raises(ValueError, match="give model_dir="):
        session.to_pipeline()
    pipe = session.to_pipeline(model_dir=tmp_path / "models")
    saved = pipe.steps[0].params["model"]
    assert (tmp_path / "models" / "classifier" / "model.safetensors").exists() and saved.endswith("classifier")
    out = pipe.run(write=False)
    direct = sn.tl.annotate(lognorm_adata, model, key_added="p", copy=True)
    np.testing.assert_array_equal(out.obs["p"].astype(str), direct.obs["p"].astype(str))


def test_an_empty_session_is_explained():
    with pytest.raises(ValueError, match="Nothing was run"):
        Session().to_pipeline()


def test_the_gui_names_still_work_and_the_module_has_no_qt():
    code = ("import sys\nfrom scnapse.pipeline.session import Session\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'napari', 'magicgui', 'torch')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    from scnapse.napari import _layers

    assert _layers.Session is Session and _layers.ModelRef is ModelRef


def test_registry_gives_functions_and_their_names():
    spec = get_step("scnapse.tl.train_classifier")
    assert spec.func is sn.tl.train_classifier and spec.trains and spec.returns_model and not spec.takes_model
    assert spec.train_options and spec.seed_param == "seed"
    assert public_name(sn.tl.annotate_images) == "scnapse.tl.annotate_images"
    assert get_step(sn.tl.forecast).takes_model
    assert public_name(get_step("scanpy.pp.pca").func) == "scanpy.pp.pca"
    assert set(MODEL_STEPS) == {"scnapse.tl.train_classifier", "scnapse.tl.train_image_classifier",
                                "scnapse.tl.train_sequence_classifier", "scnapse.tl.train_forecaster",
                                "scnapse.tl.map_query"}
    assert not get_step("scnapse.pl.loss").trains  # a plot gets no seed or device
    with pytest.raises(PipelineError, match="is not a registered step"):
        public_name(len)
    with pytest.raises(PipelineError, match="Unknown step 'os.system'"):
        get_step("os.system")


def test_register_step_by_target_and_by_function(monkeypatch):
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    monkeypatch.setattr(registry, "_NAMES", dict(registry._NAMES))
    register_step("scanpy.pp.recipe_zheng17", "pp.recipe_zheng17")
    assert "scanpy.pp.recipe_zheng17" in step_names()
    Pipeline.from_dict({"steps": [{"scanpy.pp.recipe_zheng17": {"n_top_genes": 10}}]})

    def mark(adata, *, value: int = 1):
        """Writes uns['mark']."""
        adata.uns["mark"] = value

    register_step("scnapse.test.mark", mark)
    assert public_name(mark) == "scnapse.test.mark"
    with pytest.raises(PipelineError, match="value=.x. must be an integer"):
        Pipeline.from_dict({"steps": [{"scnapse.test.mark": {"value": "x"}}]})


def test_the_decorator_wants_a_public_name():
    with pytest.raises(ValueError, match="write the public name"):
        registry.step("autoencoder")
