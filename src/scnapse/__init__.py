"""scnapse: deep learning as ordinary pipeline steps for single-cell biology."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scnapse")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

from . import datasets, models, pl, tl, train
from . import im  # images: per-cell crops, predictions painted back
from . import ts  # time series: tracks and time courses as sequences
from ._settings import settings
from .pipeline import Pipeline

__all__ = ["Pipeline", "__version__", "datasets", "models", "pl", "settings", "tl", "train"]
__all__ += ["im"]
__all__ += ["ts"]
from ._backed import read_backed  # noqa: E402  (backed .h5ad / zarr: X stays on disk)

__all__ += ["read_backed"]
