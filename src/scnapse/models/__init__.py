"""User-facing model objects: fit, transform / predict, save, load (no pickle)."""

from ._base import BaseModel
from .autoencoder import Autoencoder
from .classifier import CellClassifier
from .image import ImageModel
from .sequence import SequenceModel

__all__ = ["Autoencoder", "BaseModel"]
__all__ += ["ImageModel"]
__all__ += ["SequenceModel"]
__all__ += ["CellClassifier"]
