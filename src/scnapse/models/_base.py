"""Saving and loading models as weights (safetensors) plus a JSON config. Nothing is unpickled."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT = "scnapse-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class BaseModel:
    """Common save/load for every scnapse model.

    Subclasses implement ``_get_state() -> (config: dict, tensors: dict[str, Tensor])`` and
    ``_set_state(config, tensors)``. A saved model is a folder with ``config.json`` (what the
    model expects: genes, classes, shapes, preprocessing, how it was trained) and
    ``model.safetensors`` (its weights and any arrays).
    """

    kind: ClassVar[str] = "BaseModel"
    #: how to train one, for the "not trained yet" message
    fit_hint: ClassVar[str] = ".fit(adata)"
    module: torch.nn.Module | None = None

    def _require_fitted(self) -> None:
        if self.module is None:
            raise RuntimeError(f"This {self.kind} is not trained yet; call {self.fit_hint} first.")

    def to(self, device: str):
        """Move the trained model to ``device`` (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...); returns it."""
        from .._settings import resolve_device

        self._require_fitted()
        self.module.to(resolve_device(device))
        return self

    def _get_state(self) -> tuple[dict, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} cannot be saved")

    def _set_state(self, config: dict, tensors: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} cannot be loaded")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to the folder ``path`` (created; files in it are replaced atomically)."""
        from .. import __version__

        config, tensors = self._get_state()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                "scnapse_version": __version__, **_jsonable(config)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with tempfile.NamedTemporaryFile(dir=path, suffix=".tmp", delete=False) as tmp:
            save_file(tensors, tmp.name)
        os.replace(tmp.name, path / WEIGHTS_FILE)
        with tempfile.NamedTemporaryFile("w", dir=path, suffix=".tmp", delete=False) as tmp:
            json.dump(meta, tmp, indent=1)
        os.replace(tmp.name, path / CONFIG_FILE)
        return path

    @classmethod
    def read_config(cls, path: str | os.PathLike) -> dict:
        path = Path(path)
        cfg_file = path / CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"No saved model at {str(path)!r}.")
        if not path.is_dir() or not cfg_file.exists() or not (path / WEIGHTS_FILE).exists():
            raise ValueError(
                f"{str(path)!r} is not a scnapse model: a saved model is a folder with "
                f"{CONFIG_FILE} and {WEIGHTS_FILE} (written by model.save(path))."
            )
        try:
            meta = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(cfg_file)!r} is not a scnapse model config: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a scnapse model (its {CONFIG_FILE} has no scnapse format tag).")
        if int(meta.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was written by scnapse {meta.get('scnapse_version')} in model format "
                f"{meta.get('format_version')}; this scnapse reads format {FORMAT_VERSION} and older. "
                "Upgrade scnapse to load it."
            )
        return meta

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto"):
        """Load a model saved with :meth:`save`. Only tensors and JSON are read (no pickle)."""
        meta = cls.read_config(path)
        if meta.get("kind") != cls.kind:
            raise ValueError(
                f"{str(path)!r} holds a {meta.get('kind')} model, not a {cls.kind}; "
                f"load it with scnapse.models.{meta.get('kind')}.load."
            )
        try:
            tensors = load_file(str(Path(path) / WEIGHTS_FILE))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"The weights in {str(path)!r} cannot be read: {err}") from None
        obj = cls.__new__(cls)
        obj._set_state(meta, tensors)
        return obj
