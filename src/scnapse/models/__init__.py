"""User-facing model objects: fit, transform / predict, save, load (no pickle)."""

from ._base import BaseModel
from .autoencoder import Autoencoder

__all__ = ["Autoencoder", "BaseModel"]
