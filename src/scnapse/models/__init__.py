"""User-facing model objects: fit, transform / predict, save, load (no pickle)."""

from ._base import BaseModel
from .autoencoder import Autoencoder
from .classifier import CellClassifier
from .image import ImageModel
from .sequence import SequenceModel

__all__ = ["Autoencoder", "BaseModel", "CellClassifier", "ImageModel", "SequenceModel", "load"]


def load(path):
    """Load any saved scnapse model; its ``config.json`` says which class it is.

    Parameters
    ----------
    path
        The folder written by ``model.save``.

    Returns
    -------
    BaseModel
        An :class:`Autoencoder`, :class:`CellClassifier`, :class:`ImageModel` or
        :class:`SequenceModel`, ready to use.
    """
    kind = BaseModel.read_config(path).get("kind")
    cls = {c.kind: c for c in (Autoencoder, CellClassifier, ImageModel, SequenceModel)}.get(kind)
    if cls is None:
        raise ValueError(f"{str(path)!r} holds a model of kind {kind!r}, which this scnapse does not know.")
    return cls.load(path)

