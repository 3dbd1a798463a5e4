"""Every code block in README.md runs as written, and every link in it points at a file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def test_readme_has_only_tested_kinds_of_code_blocks():
    kinds = re.findall(r"^```(\w*)$", README.read_text(), re.M)
    opened = kinds[0::2]  # every block opens with its language and closes with a bare fence
    assert set(opened) <= {"python", "bash"}, opened
    assert len(_blocks("python")) == 1 and len(_blocks("bash")) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_setup_commands_are_make_targets_that_resolve():
    commands = [line.split("#")[0].strip() for line in _blocks("bash")[0].splitlines()]
    commands = [c for c in commands if c]
    assert commands == ["make demo", "make test"]
    for command in commands:
        # -n: print what would run without running it (the test suite cannot run itself)
        done = subprocess.run([*command.split(), "-n"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip(), f"{command} does nothing"


def test_links_point_at_files_in_the_repository():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    assert links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.slow
def test_ten_line_example_runs(tmp_path, monkeypatch):
    code = _blocks("python")[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    adata = namespace["adata"]
    assert adata.obsm["X_autoencoder"].shape == (700, 10)
    assert "leiden" in adata.obs and "X_umap" in adata.obsm
    assert (tmp_path / "pbmc_ae" / "model.safetensors").exists()
