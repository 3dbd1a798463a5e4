"""scnapse: deep learning as ordinary pipeline steps for single-cell biology."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scnapse")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

from . import datasets, im, models, pl, tl, train, ts
from ._backed import read_backed  # backed .h5ad / zarr: X stays on disk
from ._settings import settings
from .pipeline import Pipeline

__all__ = [
    "Pipeline", "__version__", "datasets", "im", "models", "pl", "read_backed", "settings", "tl", "train", "ts",
]
