"""Package-wide conventions: scanpy's package-structure rules for ``tl``, ``pl``, ``im`` and ``ts``
(first argument ``adata``, at most 3 positional parameters, keyword-only ``copy``, ``key_added``
on every writer, plots return matplotlib objects), one contract for every model family's steps,
and no GUI in the core."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import make_counts

import scnapse as sn
from scnapse.train import RUN_OPTIONS, RunOptions

MODULES = {"tl": sn.tl, "pl": sn.pl, "im": sn.im, "ts": sn.ts}
API = {f"{mod}.{name}": getattr(module, name) for mod, module in MODULES.items() for name in module.__all__
       if inspect.isfunction(getattr(module, name))}

#: functions whose first argument is not an AnnData, and why
NOT_ADATA_FIRST = {
    "im.cells_from_labels": "builds the AnnData of cells from an image and its label image",
    "im.sample_image": "reads a bundled image and its labels",
    "im.synthetic_image": "makes an image and its labels",
    "im.paint_classes": "paints a label image from a class table",
    "im.label_colors": "turns a class table into a napari colormap",
    "ts.from_array": "builds a sequence AnnData from an array",
    "ts.from_tracks": "builds a sequence AnnData from a tracking table",
    "ts.measure_tracks": "measures a time-lapse label image into a table",
    "ts.read_mastodon_csv": "reads a file",
    "ts.simulate_damped": "simulates a sequence AnnData",
    "ts.simulate_oscillations": "simulates a sequence AnnData",
}
#: steps that return a model and also write into the AnnData (so they take ``key_added``)
MODEL_AND_RECORD = {"tl.train_classifier": "writes uns[key_added], the held-out metrics",
                    "tl.map_query": "writes obsm/uns of the query, returns the mapped model"}
TRAINING_STEPS = ["autoencoder", "image_embedding", "sequence_embedding", "train_classifier",
                  "train_image_classifier", "train_sequence_classifier", "train_forecaster"]


def _positional(func) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _writes_into_adata(name: str, func) -> bool:
    return name in MODEL_AND_RECORD or (name.startswith("tl.") and "None" in str(inspect.signature(func).return_annotation))


@pytest.mark.parametrize("name", sorted(API))
def test_scanpy_signature_rules(name):
    func = API[name]
    sig = inspect.signature(func)
    assert len(_positional(func)) <= 3, f"{name}: at most 3 positional parameters"
    first = next(iter(sig.parameters.values()))
    if name in NOT_ADATA_FIRST:
        assert first.name != "adata", f"{name} takes adata first: remove it from NOT_ADATA_FIRST"
    else:
        assert first.name == "adata" and first.annotation in ("AnnData", AnnData), f"{name}: first argument adata: AnnData"
    if "copy" in sig.parameters:
        copy = sig.parameters["copy"]
        assert copy.kind is copy.KEYWORD_ONLY and copy.default is False, name
        assert sig.return_annotation == "AnnData | None", f"{name} returns {sig.return_annotation}"
    if _writes_into_adata(name, func):
        assert "key_added" in sig.parameters, f"{name} writes into the AnnData: it needs key_added"
        assert sig.parameters["key_added"].kind is inspect.Parameter.KEYWORD_ONLY
    assert func.__doc__ and len(func.__doc__) > 80, f"{name} needs a docstring"


@pytest.mark.parametrize("name", [n for n in sorted(API) if n.startswith("pl.")])
def test_plots_are_annotated_to_return_matplotlib_objects(name):
    ret = str(inspect.signature(API[name]).return_annotation)
    assert any(t in ret for t in ("Axes", "Figure")) or ret == "None", f"{name} -> {ret}"


def test_plots_return_axes(tmp_path):
    from matplotlib.axes import Axes

    adata = make_counts(30, 10)
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(30, 2))
    adata.obs["predicted"] = adata.obs["cell_type"]
    adata.uns["autoencoder"] = {"history": {"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5],
                                            "best_epoch": 2}}
    trials = pd.DataFrame({"val_loss": [2.0, 1.0], "best_so_far": [2.0, 1.0], "state": ["complete", "complete"]})
    adata.uns["tune"] = {"trials": trials, "metric": "val_loss", "sampler": "random", "step": "autoencoder"}
    adata.uns["compare_runs"] = {"table": pd.DataFrame({"final_val_loss": [1.5], "best_val_loss": [1.5],
                                                        "final_train_loss": [1.0]}, index=["lr=0.1"]),
                                 "histories": {"lr=0.1": {"train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5]}},
                                 "vary": {"lr": [0.1]}, "step": "scnapse.tl.autoencoder"}
    seqs = sn.ts.simulate_oscillations(10, seed=0)
    out = [sn.pl.compare_runs(adata).axes[0], sn.pl.loss(adata), sn.pl.tune(adata), sn.pl.embedding(adata, color="cell_type"),
           sn.pl.confusion_matrix(adata, "cell_type", "predicted"), sn.pl.sequences(seqs, forecast_key=None)]
    adata.obs["batch"] = ["a", "b"] * 15
    adata.uns["integration_metrics"] = pd.DataFrame({"Total": [0.5]}, index=["X_umap"])
    fig = sn.pl.integration(adata, keys=["X_umap"], umap=False)  # a Figure: the table and UMAP panels
    assert len(out) + 1 == len(sn.pl.__all__)
    assert all(isinstance(ax, Axes) for ax in out) and fig.axes


@pytest.mark.parametrize("name", TRAINING_STEPS)
def test_training_steps_take_run_options_once(name):
    """``run: RunOptions | None`` and ``**options`` (TrainConfig fields and run-option keywords),
    no run option retyped in the signature; architecture defaults are the model's."""
    sig = inspect.signature(getattr(sn.tl, name))
    run = sig.parameters["run"]
    assert run.kind is run.KEYWORD_ONLY and run.default is None and run.annotation == "RunOptions | None"
    assert list(sig.parameters.values())[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert not set(RUN_OPTIONS) & set(sig.parameters), f"{name} retypes run options"
    assert "scnapse.train.RunOptions" in getattr(sn.tl, name).__doc__  # referred to, not restated
    model = {"autoencoder": sn.models.Autoencoder, "train_classifier": sn.models.CellClassifier}.get(
        name, sn.models.ImageModel if "image" in name else sn.models.SequenceModel)
    for arch in ("hidden", "channels"):
        if arch in sig.parameters:
            default = inspect.signature(model).parameters[arch].default
            default = (default,) if isinstance(default, int) else tuple(default)
            assert tuple(sig.parameters[arch].default) == default, f"{name}({arch}=) differs from {model.__name__}"


# -- the contract, on tiny data of each family -----------------------------------------------------
def _cells():
    return make_counts(80, 30, n_types=2, seed=1), "cell_type"


def _crops():
    image, labels, classes = sn.im.synthetic_image(8, kind="texture", seed=0)
    cells = sn.im.cells_from_labels(image, labels, size=16)
    cells.obs["kind"] = pd.Categorical(classes[cells.obs["label"].to_numpy() - 1])
    return cells, "kind"


def _sequences():
    return sn.ts.simulate_oscillations(40, min_length=5, max_length=12, seed=0), "label"


FAST = {"max_epochs": 3, "seed": 0, "batch_size": 16}
#: family → (data, training step, its tiny architecture, annotate step)
FAMILIES = {
    "cells": (_cells, "train_classifier", {"hidden": (8,)}, "annotate"),
    "images": (_crops, "train_image_classifier", {"channels": (4, 8)}, "annotate_images"),
    "sequences": (_sequences, "train_sequence_classifier", {"hidden": (4,)}, "annotate_sequences"),
}
EMBEDDINGS = {
    "autoencoder": (_cells, {"hidden": (8,), "n_latent": 2}, "X_autoencoder", "autoencoder"),
    "image_embedding": (_crops, {"channels": (4, 8), "n_latent": 2}, "X_cnn", "cnn"),
    "sequence_embedding": (_sequences, {"hidden": (4,), "n_latent": 2}, "X_rnn", "rnn"),
}


def _stop_after_first_epoch(seen):
    def callback(report):
        seen.append(report.epoch)
        return False
    return callback


@pytest.fixture(scope="module")
def trained(one_torch_thread):
    out = {}
    for family, (make, step, arch, _) in FAMILIES.items():
        adata, labels_key = make()
        out[family] = adata, getattr(sn.tl, step)(adata, labels_key=labels_key, progress=False, **arch, **FAST)
    return out


@pytest.mark.parametrize("name", TRAINING_STEPS)
@pytest.mark.parametrize("how", ["object", "keywords"])
def test_run_options_reach_the_training(name, how, one_torch_thread):
    """Given as ``run=RunOptions(...)`` or as keywords, the run options reach the loop: a callback
    that stops after the first epoch ends every training step there."""
    seen = []
    run = {"callback": _stop_after_first_epoch(seen), "progress": False}
    kwargs = {"run": RunOptions(**run)} if how == "object" else run
    if name in EMBEDDINGS:
        make, arch, obsm, uns = EMBEDDINGS[name]
        adata, _ = make()
        assert getattr(sn.tl, name)(adata, **arch, **FAST, **kwargs) is None
        assert adata.obsm[obsm].shape == (adata.n_obs, 2)
        losses = adata.uns[uns]["history"]["train_loss"]
    else:
        family = "forecaster" if name == "train_forecaster" else next(f for f, v in FAMILIES.items() if v[1] == name)
        if family == "forecaster":
            adata, _ = _sequences()
            model = sn.tl.train_forecaster(adata, hidden=(4,), horizon=2, **FAST, **kwargs)
        else:
            make, _, arch, _ = FAMILIES[family]
            adata, labels_key = make()
            model = getattr(sn.tl, name)(adata, labels_key=labels_key, **arch, **FAST, **kwargs)
        losses = model.history.train_loss
    assert seen == [1] and len(losses) == 1


def test_run_and_train_options_are_told_apart(one_torch_thread):
    adata, _ = _cells()
    with pytest.raises(TypeError, match="run must be a scnapse.train.RunOptions"):
        sn.tl.autoencoder(adata, run={"progress": False}, **FAST)
    with pytest.raises(TypeError, match="Unknown option"):
        sn.tl.autoencoder(adata, progres=False, **FAST)  # neither a run option nor a TrainConfig field
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        sn.tl.train_classifier(adata, labels_key="cell_type", resume=True, **FAST)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_annotate_step_writes_the_same_keys(family, trained, tmp_path):
    adata, model = trained[family]
    annotate = getattr(sn.tl, FAMILIES[family][3])
    assert inspect.signature(annotate).parameters["key_added"].default == "predicted"
    lax = {"min_typicality": 0} if family == "cells" else {}
    out = annotate(adata, model, min_confidence=0, copy=True, **lax)
    assert "predicted" not in adata.obs  # copy=True left the input alone
    pred = out.obs["predicted"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert list(pred.cat.categories) == [*model.classes, "Unassigned"] and (pred != "Unassigned").all()
    proba = out.obsm["predicted_probabilities"]
    assert isinstance(proba, pd.DataFrame) and list(proba.columns) == list(model.classes)
    assert (proba.index == out.obs_names).all()
    np.testing.assert_allclose(out.obs["predicted_confidence"], proba.to_numpy().max(1), rtol=1e-6)
    assert out.uns["predicted"]["classes"] == list(model.classes)
    assert len(out.uns["predicted_colors"]) == len(model.classes) + 1
    # below min_confidence: Unassigned
    threshold = float(np.median(out.obs["predicted_confidence"]))
    strict = annotate(adata, model, min_confidence=threshold, key_added="strict", copy=True, **lax)
    np.testing.assert_array_equal((strict.obs["strict"] == "Unassigned").to_numpy(),
                                  strict.obs["strict_confidence"].to_numpy() < threshold)
    assert strict.uns["strict"]["params"]["min_confidence"] == threshold
    # a saved folder works as the model
    model.save(tmp_path / "m")
    again = annotate(adata, str(tmp_path / "m"), min_confidence=0, copy=True, **lax)
    assert (again.obs["predicted"] == pred).all() and again.uns["predicted"]["params"]["model"] == str(tmp_path / "m")
    with pytest.raises(ValueError, match="min_confidence=2"):
        annotate(adata, model, min_confidence=2)
    with pytest.raises(TypeError, match="or the folder it was saved to"):
        annotate(adata, object())
    assert ("min_typicality" in inspect.signature(annotate).parameters) == (family == "cells")


def test_old_names_still_work_with_a_future_warning(trained, one_torch_thread):
    adata, model = trained["images"]
    with pytest.warns(FutureWarning, match=r"annotate_images\(cells=...\) is now annotate_images\(adata=...\)"):
        out = sn.tl.annotate_images(cells=adata, model=model, copy=True)
    assert "predicted" in out.obs
    with pytest.warns(FutureWarning, match="class_table"):
        assert len(sn.im.class_table(cells=out)) == out.n_obs
    with pytest.raises(TypeError, match="the data twice"):
        sn.tl.annotate_images(adata, model=model, cells=adata)
    ref, _ = _cells()
    with pytest.warns(FutureWarning, match=r"train_classifier\(ref=...\)"):
        sn.tl.train_classifier(ref=ref, labels_key="cell_type", hidden=(4,), progress=False, **FAST)
    assert "classifier" in ref.uns
    seqs, _ = _sequences()
    with pytest.warns(FutureWarning, match=r"hidden=\(4,\)"):
        fc = sn.tl.train_forecaster(seqs, hidden=4, horizon=2, progress=False, **FAST)
    assert sn.tl.forecast(seqs, fc, copy=True).obsm["forecast"].shape[1] == 2


# -- no GUI in the core ----------------------------------------------------------------------------
def test_core_imports_without_qt():
    code = (
        "import sys, scnapse, scnapse.tl, scnapse.models, scnapse.train, scnapse.pl, scnapse.pipeline\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', "
        "'napari', 'magicgui', 'vispy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_device_auto_resolves_and_bad_device_is_explained():
    from scnapse._settings import available_devices, resolve_device

    assert str(resolve_device("auto")).split(":")[0] in ("cuda", "mps", "cpu")
    assert resolve_device("cpu").type == "cpu"
    assert "cpu" in available_devices()
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("tpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


@pytest.mark.gpu
def test_training_on_the_gpu_matches_cpu_closely(lognorm_adata):
    """Runs only with a CUDA/MPS device: the same model trains there, close to the CPU result."""
    cpu = sn.tl.autoencoder(lognorm_adata, copy=True, max_epochs=3, progress=False, device="cpu")
    gpu = sn.tl.autoencoder(lognorm_adata, copy=True, max_epochs=3, progress=False, device="auto")
    assert gpu.uns["autoencoder"]["params"]["device"] != "cpu"
    assert np.corrcoef(cpu.obsm["X_autoencoder"].ravel(), gpu.obsm["X_autoencoder"].ravel())[0, 1] > 0.9
