"""scnapse: deep learning as ordinary pipeline steps for single-cell biology.

The subpackages load on first use (``sn.tl``, ``sn.models``…): ``import scnapse`` imports neither
torch nor scanpy, so ``scnapse info`` and the napari reader start without them.
"""

from __future__ import annotations

import importlib
import os

# OpenMP threads that spin while waiting for work steal the CPU from the other threads (and other
# processes) on a busy machine; passive waiting, unless the user chose otherwise, before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._settings import settings

try:
    __version__ = version("scnapse")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

_SUBPACKAGES = ("datasets", "im", "models", "nn", "pipeline", "pl", "tl", "train", "ts")
#: public names defined in a submodule: name → module
_NAMES = {"Pipeline": "pipeline", "read_backed": "_backed"}  # read_backed: backed .h5ad / zarr, X on disk

__all__ = [
    "Pipeline", "__version__", "datasets", "im", "models", "pl", "read_backed", "settings", "tl", "train", "ts",
]

if TYPE_CHECKING:
    from . import datasets, im, models, nn, pipeline, pl, tl, train, ts
    from ._backed import read_backed
    from .pipeline import Pipeline


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_NAMES))
