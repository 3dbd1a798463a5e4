"""Distributed data parallel training with PyTorch's own engine, under ``torchrun``.

``torchrun --nproc_per_node N -m scnapse run pipeline.yaml`` starts N processes with the
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` environment variables set. Every scnapse training step
then trains through :func:`scnapse.train.fit`, which, when the world has more than one process:

- joins the process group (``gloo`` on CPUs, ``nccl`` on CUDA GPUs: one GPU per process, chosen by
  ``LOCAL_RANK``);
- wraps the model in :class:`torch.nn.parallel.DistributedDataParallel` (gradients are averaged
  across processes during the backward pass);
- gives each process its share of every global mini-batch: all processes shuffle with the same
  seeded generator, so they draw the same global batches, and rank ``r`` keeps the rows
  ``r, r + N, ...`` of each; the loss is scaled so that the averaged gradient is the gradient of
  the global batch's mean loss — the same update as one process with the same ``batch_size``;
- sums training and validation losses over all processes, so every process takes the same early
  stopping decision;
- lets only rank 0 write files (checkpoints, the pipeline's output, plots).

In your own script, call :func:`init_distributed` first (it also picks the GPU of a process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by ``torchrun``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return env_world_size()


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Whether this is rank 0, or the only process: the one that writes files.

    Returns
    -------
    bool
        ``True`` on rank 0 and outside distributed runs.
    """
    return rank() == 0


def init_distributed(device: str | torch.device | None = None) -> bool:
    """Join the process group when launched with ``WORLD_SIZE > 1``.

    Safe to call more than once.

    Parameters
    ----------
    device
        ``"cuda"``/``"auto"`` with CUDA available selects ``cuda:LOCAL_RANK`` as this process's
        GPU and the ``nccl`` backend; otherwise ``gloo``.

    Returns
    -------
    bool
        Whether this process is part of a distributed run.
    """
    if env_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    if dist.is_initialized():
        return dist.get_world_size() > 1
    name = str(device if device is not None else "auto").lower()
    cuda = torch.cuda.is_available() and (name == "auto" or name.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_world_size() > 1


def ensure_process_group(device: torch.device) -> bool:
    """Called by the training loop: join the group if ``torchrun`` asked for one."""
    if is_distributed():
        return True
    if env_world_size() > 1:
        return init_distributed(device)
    return False


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over all processes (float64)."""
    if not is_distributed():
        return list(values)
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_gather_object(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def destroy() -> None:
    """Leave the process group (end of a ``torchrun`` process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _StepModule(nn.Module):
    """What DistributedDataParallel wraps: a forward pass that is the whole step, so that every
    model's ``step`` (which may call any method of its module) runs unchanged under DDP."""

    def __init__(self, module: nn.Module, step, extra: list[nn.Parameter] | None):
        super().__init__()
        self.module = module
        self.extra = nn.ParameterList(extra or [])
        self.step = step

    def forward(self, batch: dict, training: bool) -> torch.Tensor:
        return self.step(self.module, batch, training)


@dataclass
class Parallel:
    """The training loop's view of data parallelism: one process (``ddp=None``, world 1), or a
    DistributedDataParallel wrapper with this process's rank in a world of several."""

    ddp: nn.Module | None = None
    rank: int = 0
    world: int = 1

    @classmethod
    def setup(cls, module, step, extra, train, val, device: torch.device, distributed: bool | None):
        """``(parallel, train, val)``: under ``torchrun`` the loaders are sharded and the module
        wrapped; otherwise everything is returned as it is."""
        if distributed is False or not ensure_process_group(device):
            return cls(), train, val
        from torch.nn.parallel import DistributedDataParallel

        r, w = rank(), world_size()
        if r:  # different dropout / noise on every rank, reproducibly
            torch.manual_seed(torch.initial_seed() + 7919 * r)
        ddp = DistributedDataParallel(_StepModule(module, step, extra),
                                      device_ids=[device] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
        return cls(ddp, r, w), train.shard(r, w), (val.shard(r, w) if val is not None else None)

    def losses(self, module, step, batch) -> torch.Tensor:
        """Per-sample training losses of ``batch``."""
        return step(module, batch, True) if self.ddp is None else self.ddp(batch, True)

    def batch_loss(self, losses: torch.Tensor, loader) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(loss to minimise, this rank's loss sum, its number of rows)``. Under DDP the rows of
        a global batch are weighted so that the averaged gradient is the gradient of the global
        batch's mean loss (padding rows weigh 0)."""
        w = loader.last_weight if self.ddp is not None else None
        if w is None or w.shape[0] != losses.shape[0]:  # one process, or losses not one per row
            return losses.mean(), losses.sum(), float(losses.shape[0])
        local = (losses * w.to(losses.device)).sum()
        return local * self.world / max(loader.last_global_rows, 1), local, float(w.sum())

    def epoch_means(self, train_sums, val_sums, cancelled: bool, device) -> tuple[float, float | None, bool]:
        """``(train loss, validation loss or None, stop everywhere)``: sums over every process,
        so that every process takes the same early-stopping decision."""
        (t, tn), val = train_sums, val_sums
        vt, vn = val if val is not None else (0.0, 0.0)
        if self.ddp is not None:
            t, tn, vt, vn, flag = all_reduce_sum([t, tn, vt, vn, float(cancelled)], device)
            cancelled = flag > 0
        return t / max(tn, 1), (vt / max(vn, 1) if val is not None else None), cancelled and self.ddp is not None
