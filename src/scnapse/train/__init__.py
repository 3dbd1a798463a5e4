"""The training engine: one config, one loop, batches from any matrix. Knows tensors, not AnnData."""

from .config import TrainConfig
from .data import Loader, Matrix, split_indices
from .loop import EpochReport, History, StopTraining, fit, iter_fit
from .optim import build_optimizer
from .repro import environment, seed_everything

__all__ = [
    "EpochReport", "History", "Loader", "Matrix", "StopTraining", "TrainConfig", "build_optimizer",
    "environment", "fit", "iter_fit", "seed_everything", "split_indices",
]
