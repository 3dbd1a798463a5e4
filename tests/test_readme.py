"""The README's ten-line example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_ten_line_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## In ten lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    adata = namespace["adata"]
    assert adata.obsm["X_autoencoder"].shape == (700, 10)
    assert "leiden" in adata.obs and "X_umap" in adata.obsm
    assert (tmp_path / "pbmc_ae" / "model.safetensors").exists()
