"""The training engine: one config, one loop, batches from any matrix. Knows tensors, not AnnData."""

from .checkpoint import Checkpoint
from .config import TrainConfig
from .data import Loader, Matrix, split_indices
from .distributed import init_distributed, is_main_process
from .loop import PRECISIONS, EpochReport, History, StopTraining, fit, iter_fit
from .optim import build_optimizer
from .repro import environment, seed_everything, thread_limits
from .run import RUN_OPTIONS, RunOptions

__all__ = [
    "Checkpoint", "EpochReport", "History", "Loader", "Matrix", "PRECISIONS", "RUN_OPTIONS", "RunOptions", "StopTraining", "TrainConfig",
    "build_optimizer", "environment", "fit", "init_distributed", "is_main_process", "iter_fit",
    "seed_everything", "split_indices", "thread_limits",
]
