"""Plots (matplotlib): loss curves, embeddings, confusion matrices, sequences, tuning runs."""

from ._compare_runs import compare_runs
from ._confusion import confusion_matrix
from ._integration import integration
from ._loss import embedding, loss
from ._sequence import sequences
from ._tune import tune

__all__ = ["compare_runs", "confusion_matrix", "embedding", "integration", "loss", "sequences", "tune"]
