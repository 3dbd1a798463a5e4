"""Plots: loss curves and embeddings (matplotlib)."""

from ._loss import embedding, loss
from ._confusion import confusion_matrix

__all__ = ["embedding", "loss"]
__all__ += ["confusion_matrix"]
