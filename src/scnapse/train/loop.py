"""The one training loop every scnapse model uses.

``iter_fit`` is a generator that trains and yields an :class:`EpochReport` after each epoch, so a
napari ``thread_worker`` can pass it on as it is; ``fit`` runs it to the end with a progress bar
and callbacks. Whichever way training ends — finished, early-stopped, cancelled, or closed — the
best weights seen so far (by validation loss) are put back into the model.

The same loop runs mixed precision (``precision=``), saves and resumes checkpoints
(``checkpoint=``, see :mod:`scnapse.train.checkpoint`) and, launched by ``torchrun`` with several
processes, trains with DistributedDataParallel (see :mod:`scnapse.train.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import distributed as dist_utils
from .checkpoint import Checkpoint, rng_state, set_rng_state
from .config import TrainConfig
from .data import Loader
from .optim import build_optimizer

#: ``step(module, batch, training) -> per-sample losses (1-D tensor)``
StepFn = Callable[[nn.Module, dict, bool], torch.Tensor]


class StopTraining(Exception):
    """Raise from a callback to stop training (the best model so far is kept)."""


@dataclass
class EpochReport:
    epoch: int  # 1-based
    max_epochs: int
    train_loss: float
    val_loss: float | None
    lr: float
    seconds: float
    best_epoch: int
    improved: bool


@dataclass
class History:
    """Per-epoch losses; ``stopped`` says why training ended."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "not started"

    def add(self, r: EpochReport) -> None:
        self.epoch.append(r.epoch)
        self.train_loss.append(r.train_loss)
        self.val_loss.append(r.val_loss)
        self.lr.append(r.lr)
        self.seconds.append(r.seconds)
        self.best_epoch = r.best_epoch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["val_loss"] = [float("nan") if v is None else v for v in self.val_loss]
        return d


def weight_penalty(module: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    """``l1 Σ|w| + l2 Σw²`` over weight matrices and kernels (not biases or norm scales)."""
    if not (l1 or l2):
        return 0.0
    total = 0.0
    for name, p in module.named_parameters():
        if p.requires_grad and p.dim() > 1:
            if l1:
                total = total + l1 * p.abs().sum()
            if l2:
                total = total + l2 * p.pow(2).sum()
    return total


PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str | None, device: torch.device) -> str:
    """``fp32`` (default), ``bf16`` or ``fp16`` autocast; ``fp16`` needs a GPU."""
    if precision is None:
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; choose one of {list(PRECISIONS)}.")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' needs a GPU (CPUs have no fast float16); use 'bf16' or 'fp32' on a CPU.")
    return precision


def autocast(device: torch.device, precision: str | None):
    """Mixed-precision context for ``precision`` on ``device`` (a no-op for ``fp32``)."""
    if precision in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class _StepModule(nn.Module):
    """What DistributedDataParallel wraps: a forward pass that is the whole step, so that every
    model's ``step`` (which may call any method of its module) runs unchanged under DDP."""

    def __init__(self, module: nn.Module, step: StepFn, extra: list[nn.Parameter] | None):
        super().__init__()
        self.module = module
        self.extra = nn.ParameterList(extra or [])
        self.step = step

    def forward(self, batch: dict, training: bool) -> torch.Tensor:
        return self.step(self.module, batch, training)


def _loss_sums(module: nn.Module, step: StepFn, loader: Loader, precision: str | None = None) -> tuple[float, float]:
    """Sum of the per-sample losses over ``loader`` and the number of samples (this rank's share)."""
    module.eval()
    total, n = 0.0, 0.0
    device = next(module.parameters()).device if any(True for _ in module.parameters()) else torch.device("cpu")
    with torch.no_grad():
        for batch in loader:
            with autocast(device, precision):
                losses = step(module, batch, False)
            losses = losses.float()
            w = getattr(loader, "last_weight", None) if getattr(loader, "world_size", 1) > 1 else None
            if w is not None and w.shape[0] == losses.shape[0]:
                total += float((losses * w.to(losses.device)).sum())
                n += float(w.sum())
            else:
                total += float(losses.sum())
                n += losses.shape[0]
    return total, n


def _mean_loss(module: nn.Module, step: StepFn, loader: Loader) -> float | None:
    if loader is None or len(loader) == 0:
        return None
    total, n = _loss_sums(module, step, loader)
    return total / max(n, 1)


def _fingerprint(module: nn.Module, train: Loader, val: Loader | None, config: TrainConfig, precision: str,
                 world: int) -> dict:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("max_epochs", "device")}
    return {
        "parameters": [list(p.shape) for p in module.parameters()],
        "n_train": len(train), "n_validation": len(val) if val is not None else 0,
        "config": cfg, "precision": precision, "world_size": world,
    }


def iter_fit(
    module: nn.Module,
    step: StepFn,
    train: Loader,
    val: Loader | None,
    config: TrainConfig,
    *,
    max_epochs: int,
    cancel: threading.Event | None = None,
    extra_parameters: list[nn.Parameter] | None = None,
    precision: str | None = None,
    checkpoint: Checkpoint | None = None,
    distributed: bool | None = None,
) -> Iterator[EpochReport]:
    """Train ``module`` and yield a report after each epoch; see the module docstring.

    Parameters
    ----------
    precision
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: mixed precision (``torch.autocast``) for the
        forward passes; the weights and the optimizer stay in float32 (``fp16`` adds a gradient
        scaler and needs a GPU).
    checkpoint
        A :class:`~scnapse.train.checkpoint.Checkpoint`: save the training state every
        ``checkpoint.every`` epochs and, with ``checkpoint.resume``, start from the saved state.
    distributed
        ``None`` (default): distributed data parallel when launched by ``torchrun`` with more
        than one process (see :mod:`scnapse.train.distributed`); ``False``: never.
    """
    params = [p for p in module.parameters() if p.requires_grad] + list(extra_parameters or [])
    device = next(iter(params)).device if params else torch.device("cpu")
    precision = check_precision(precision, device)
    ddp, rank, world = None, 0, 1
    if distributed is not False and dist_utils.ensure_process_group(device):
        from torch.nn.parallel import DistributedDataParallel

        rank, world = dist_utils.rank(), dist_utils.world_size()
        train = train.shard(rank, world)
        val = val.shard(rank, world) if val is not None else None
        if rank:  # different dropout / noise on every rank, reproducibly
            torch.manual_seed(torch.initial_seed() + 7919 * rank)
        ddp = DistributedDataParallel(
            _StepModule(module, step, extra_parameters),
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    optimizer = build_optimizer(
        config.optimizer, params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = None
    if config.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(2, config.early_stopping // 3 if config.early_stopping else 5)
        )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    best_loss, best_epoch, best_state, waited = math.inf, 0, None, 0
    start_epoch, reports = 1, []
    fingerprint = _fingerprint(module, train, val, config, precision, world) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.resume:
        state = checkpoint.load(map_location=device)
        if state is not None:
            Checkpoint.check_same_run(state["fingerprint"], fingerprint, checkpoint.path)
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            if train.generator is not None and state.get("shuffle_rng") is not None:
                train.generator.set_state(state["shuffle_rng"].cpu())
            set_rng_state(state["rng"][rank])
            best_loss, best_epoch, waited = float(state["best_loss"]), int(state["best_epoch"]), int(state["waited"])
            best_state = state["best_state"]
            start_epoch = int(state["epoch"]) + 1
            reports = [dict(r) for r in state["history"]]
            checkpoint.restored_epoch = int(state["epoch"])
            checkpoint.restored_reports = list(reports)
    completed = False
    try:
        finished = bool(reports) and bool(
            start_epoch > max_epochs or (config.early_stopping and waited >= config.early_stopping)
        )
        for epoch in range(start_epoch, max_epochs + 1):
            if finished:
                break
            t0 = time.perf_counter()
            module.train()
            total = torch.zeros((), device=device)
            n = 0.0 if ddp is not None else 0
            for batch in train:
                if ddp is None and cancel is not None and cancel.is_set():
                    raise StopTraining("cancelled")
                with autocast(device, precision):
                    losses = step(module, batch, True) if ddp is None else ddp(batch, True)
                losses = losses.float()
                if ddp is None:
                    loss = losses.mean() + weight_penalty(module, config.l1, config.l2)
                    total += losses.detach().sum()
                    n += losses.shape[0]
                else:
                    w = train.last_weight
                    if w is not None and w.shape[0] == losses.shape[0]:
                        local = (losses * w.to(losses.device)).sum()
                        loss = local * world / max(train.last_global_rows, 1)
                        n += float(w.sum())
                    else:  # a step whose losses are not one per row: average of the ranks' means
                        local = losses.sum()
                        loss = losses.mean()
                        n += losses.shape[0]
                    loss = loss + weight_penalty(module, config.l1, config.l2)
                    total += local.detach()
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            if ddp is None:
                train_loss = float(total) / max(n, 1)
                val_loss = None if val is None or len(val) == 0 else _ratio(_loss_sums(module, step, val, precision))
                stop_all = False
            else:
                vt, vn = _loss_sums(module, step, val, precision) if val is not None and len(val) else (0.0, 0.0)
                flag = float(cancel is not None and cancel.is_set())
                t_sum, t_n, vt, vn, flag = dist_utils.all_reduce_sum([float(total), float(n), vt, vn, flag], device)
                train_loss = t_sum / max(t_n, 1)
                val_loss = vt / max(vn, 1) if val is not None and len(val) else None
                stop_all = flag > 0
            monitored = train_loss if val_loss is None else val_loss
            if not math.isfinite(monitored):
                raise FloatingPointError(
                    f"The loss became {monitored} at epoch {epoch}: training diverged. Lower the "
                    f"learning rate (lr={config.lr:g}), or check the data's scale for cost={config.cost!r}."
                )
            improved = monitored < best_loss - 1e-4 * abs(best_loss) if math.isfinite(best_loss) else True
            if improved:
                best_loss, best_epoch, waited = monitored, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                waited += 1
            if scheduler is not None:
                scheduler.step(monitored)
            report = EpochReport(
                epoch=epoch, max_epochs=max_epochs, train_loss=train_loss, val_loss=val_loss,
                lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
                best_epoch=best_epoch, improved=improved,
            )
            reports.append(asdict(report))
            stopping = bool(config.early_stopping and waited >= config.early_stopping)
            if checkpoint is not None and checkpoint.due(epoch, last=stopping or epoch == max_epochs):
                rngs = dist_utils.all_gather_object(rng_state())
                if rank == 0:
                    checkpoint.save({
                        "epoch": epoch, "max_epochs": max_epochs, "fingerprint": fingerprint,
                        "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "shuffle_rng": train.generator.get_state() if train.generator is not None else None,
                        "rng": rngs, "best_loss": best_loss, "best_epoch": best_epoch, "waited": waited,
                        "best_state": best_state, "history": reports,
                    })
                dist_utils.barrier()
            yield report
            if stop_all:
                raise StopTraining("cancelled")
            if stopping:
                break
        completed = True
    finally:
        # early stopping keeps the best weights; so does any interruption (cancel, error, close)
        if best_state is not None and (config.early_stopping or not completed):
            module.load_state_dict(best_state)
        module.eval()
        del ddp


def _ratio(sums: tuple[float, float]) -> float:
    return sums[0] / max(sums[1], 1)


def fit(
    module: nn.Module,
    step: StepFn,
    train: Loader,
    val: Loader | None,
    config: TrainConfig,
    *,
    max_epochs: int,
    progress: bool = True,
    callback: Callable[[EpochReport], bool | None] | None = None,
    cancel: threading.Event | None = None,
    description: str = "training",
    extra_parameters: list[nn.Parameter] | None = None,
    precision: str | None = None,
    checkpoint: Checkpoint | None = None,
    distributed: bool | None = None,
) -> History:
    """Train to the end; return the :class:`History`.

    ``callback(report)`` is called after each epoch; returning ``False`` (or raising
    :class:`StopTraining`) stops training, as does setting ``cancel``. The best weights are kept.
    ``precision``, ``checkpoint`` and ``distributed``: see :func:`iter_fit`. A resumed run's
    history holds the epochs before the checkpoint too.
    """
    history = History(stopped="max_epochs")
    bar = None
    if progress and dist_utils.is_main_process():
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc=description, unit="epoch", leave=False)
    gen = iter_fit(module, step, train, val, config, max_epochs=max_epochs, cancel=cancel,
                   extra_parameters=extra_parameters, precision=precision, checkpoint=checkpoint,
                   distributed=distributed)
    new = []
    try:
        for report in gen:
            new.append(report)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{report.train_loss:.4g}",
                                val="-" if report.val_loss is None else f"{report.val_loss:.4g}")
            if callback is not None and callback(report) is False:
                history.stopped = "callback"
                break
    except StopTraining:
        history.stopped = "cancelled"
    finally:
        gen.close()
        if bar is not None:
            bar.close()
    restored = checkpoint.restored_reports[: checkpoint.restored_epoch] if checkpoint is not None else []
    for r in [EpochReport(**d) for d in restored] + new:
        history.add(r)
    if history.stopped == "max_epochs" and history.epoch and history.epoch[-1] < max_epochs:
        history.stopped = "early_stopping"
    return history
