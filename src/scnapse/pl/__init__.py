"""Plots: loss curves and embeddings (matplotlib)."""

from ._loss import embedding, loss

__all__ = ["embedding", "loss"]
