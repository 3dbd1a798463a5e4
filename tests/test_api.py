"""Package-wide conventions: scanpy-style signatures for every public step, no GUI in the core."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import scnapse as sn

PUBLIC_STEPS = [getattr(sn.tl, name) for name in sn.tl.__all__ if inspect.isfunction(getattr(sn.tl, name))]


@pytest.mark.parametrize("func", PUBLIC_STEPS, ids=lambda f: f.__name__)
def test_steps_follow_the_scanpy_signature(func):
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional and positional[0].name in ("adata", "ref", "query", "cells", "seqs"), func.__name__
    # at most the data and a model come positionally; every option is keyword-only
    assert len(positional) <= 2, f"{func.__name__}: options must be keyword-only"
    if len(positional) == 2:
        assert positional[1].name in ("model", "fc"), func.__name__
    if "copy" in inspect.signature(func).parameters:
        copy = inspect.signature(func).parameters["copy"]
        assert copy.kind is copy.KEYWORD_ONLY and copy.default is False
        ret = str(inspect.signature(func).return_annotation)
        assert "AnnData" in ret and "None" in ret, f"{func.__name__} returns {ret}"
    assert func.__doc__ and len(func.__doc__) > 80, f"{func.__name__} needs a docstring"


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
    import numpy as np

    cpu = sn.tl.autoencoder(lognorm_adata, copy=True, max_epochs=3, progress=False, device="cpu")
    gpu = sn.tl.autoencoder(lognorm_adata, copy=True, max_epochs=3, progress=False, device="auto")
    assert gpu.uns["autoencoder"]["params"]["device"] != "cpu"
    assert np.corrcoef(cpu.obsm["X_autoencoder"].ravel(), gpu.obsm["X_autoencoder"].ravel())[0, 1] > 0.9
