"""Plots: loss curves and embeddings (matplotlib)."""

from ._loss import embedding, loss
from ._confusion import confusion_matrix
from ._sequence import sequences
from ._tune import tune

__all__ = ["embedding", "loss", "tune"]
__all__ += ["confusion_matrix"]
__all__ += ["sequences"]
