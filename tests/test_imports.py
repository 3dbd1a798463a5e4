"""What starts without torch: ``import scnapse``, the pipeline format, ``scnapse info`` and the
napari ``.h5ad`` reader. Each runs in a fresh interpreter, so that nothing imported by the test
session hides an import."""

from __future__ import annotations

import re
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

HEAVY = ("torch", "scanpy")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def _imported(stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output."""
    names = re.findall(r"^import time:\s*\d+\s*\|\s*\d+\s*\|\s*(\S+)\s*$", stderr, flags=re.MULTILINE)
    assert names, "no -X importtime output"
    return {n.split(".")[0] for n in names}


def test_import_scnapse_loads_neither_torch_nor_scanpy():
    done = _python("import scnapse, sys; assert 'torch' not in sys.modules; assert 'scanpy' not in sys.modules; "
                   "print(scnapse.settings.device, scnapse.__version__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("auto ")


def test_the_check_itself_sees_torch():
    done = _python("import scnapse, sys; scnapse.tl; assert 'torch' not in sys.modules")
    assert done.returncode != 0 and "AssertionError" in done.stderr  # using a model does import it


def test_reading_and_checking_a_pipeline_needs_no_torch():
    code = (
        "import sys\n"
        "from scnapse.pipeline import Pipeline, Session, export_script, load_input, write_h5ad_atomic\n"
        "pipe = Pipeline.from_dict({'input': {'dataset': 'pbmc68k'}, 'steps': ['scanpy.pp.log1p']})\n"
        "export_script(pipe)\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def provenance_file(tmp_path):
    from scnapse.pipeline import Pipeline

    adata = ad.AnnData(np.abs(np.random.default_rng(0).normal(size=(20, 5))).astype(np.float32),
                       obs=pd.DataFrame(index=[f"c{i}" for i in range(20)]))
    out = tmp_path / "small.h5ad"
    Pipeline.from_dict({"steps": ["scanpy.pp.log1p"], "output": str(out)}).run(adata)
    return out


def test_scnapse_info_runs_without_torch(provenance_file):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "scnapse", "info", str(provenance_file)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "20 cells × 5 genes" in done.stdout and "scanpy.pp.log1p" in done.stdout
    assert not set(HEAVY) & _imported(done.stderr)
    helped = subprocess.run([sys.executable, "-X", "importtime", "-m", "scnapse", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "info" in helped.stdout
    assert not set(HEAVY) & _imported(helped.stderr)


def test_the_napari_reader_opens_h5ad_without_torch_or_qt(provenance_file):
    code = (
        "import sys\n"
        "from scnapse.napari._io import napari_get_reader\n"
        f"layers = napari_get_reader({str(provenance_file)!r})({str(provenance_file)!r})\n"
        "assert len(layers) == 1 and layers[0][2] == 'points'\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'qtpy', 'PyQt5', 'PyQt6', 'magicgui')]\n"
        "assert not bad, bad\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
