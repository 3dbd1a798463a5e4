"""The one training loop every scnapse model uses.

``iter_fit`` is a generator that trains and yields an :class:`EpochReport` after each epoch, so a
napari ``thread_worker`` can pass it on as it is; ``fit`` runs it to the end with a progress bar
and callbacks. Whichever way training ends — finished, early-stopped, cancelled, or closed — the
best weights seen so far (by validation loss) are put back into the model.

Before the first epoch the validation loss of the model as it was built is measured (the
*start*, "epoch 0"; ``History.start_val_loss``): a model that starts at a classical solution (the
linear paths of ``linear_init``) keeps it when no epoch beats it on the validation samples
(``best_epoch`` 0). Measuring it draws no random numbers, so a seed gives the numbers it gave.

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
from .checkpoint import Checkpoint, rng_state
from .config import TrainConfig
from .data import Loader
from .optim import build_optimizer

#: ``step(module, batch, training) -> per-sample losses (1-D tensor)``
StepFn = Callable[[nn.Module, dict, bool], torch.Tensor]


class StopTraining(Exception):
    """Raise from a callback to stop training (the best model so far is kept)."""


@dataclass
class EpochReport:
    """What one epoch of training did; given to callbacks and yielded by :func:`iter_fit`.

    Parameters
    ----------
    epoch
        The epoch just finished (1-based).
    max_epochs
        The most epochs this run may take.
    train_loss, val_loss
        Mean losses over the epoch (``val_loss`` is ``None`` without validation cells).
    lr
        Learning rate used in this epoch.
    seconds
        Wall-clock time of the epoch.
    best_epoch
        The epoch whose weights are kept so far (0: the start, before any training).
    improved
        Whether this epoch is the new best.
    start_val_loss
        The validation loss of the model before the first epoch (``None`` without validation
        samples).
    """
    epoch: int  # 1-based
    max_epochs: int
    train_loss: float
    val_loss: float | None
    lr: float
    seconds: float
    best_epoch: int
    improved: bool
    start_val_loss: float | None = None


@dataclass
class History:
    """Per-epoch losses of a training run; ``stopped`` says why it ended.

    Parameters
    ----------
    epoch, train_loss, val_loss, lr, seconds
        One entry per epoch.
    best_epoch
        The epoch whose weights were kept; 0 when no epoch beat the start (the model as built,
        e.g. the classical solution of a ``linear_init`` path), which is then kept.
    stopped
        ``"max_epochs"``, ``"early_stopping"``, ``"cancelled"`` or ``"callback"``.
    start_val_loss
        The validation loss before the first epoch ("epoch 0"; ``None`` without validation
        samples, and in histories saved before it was measured).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "not started"
    start_val_loss: float | None = None

    def add(self, r: EpochReport) -> None:
        self.epoch.append(r.epoch)
        self.train_loss.append(r.train_loss)
        self.val_loss.append(r.val_loss)
        self.lr.append(r.lr)
        self.seconds.append(r.seconds)
        self.best_epoch = r.best_epoch
        if r.start_val_loss is not None:
            self.start_val_loss = r.start_val_loss

    def to_dict(self) -> dict:
        d = asdict(self)
        d["val_loss"] = [float("nan") if v is None else v for v in self.val_loss]
        d["start_val_loss"] = float("nan") if self.start_val_loss is None else self.start_val_loss
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


@dataclass
class _Progress:
    """The loop's bookkeeping: best validation loss so far and its weights, patience used."""

    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict | None = None
    waited: int = 0
    history: list = field(default_factory=list)

    def update(self, monitored: float, epoch: int, module: nn.Module) -> bool:
        improved = monitored < self.best_loss - 1e-4 * abs(self.best_loss) if math.isfinite(self.best_loss) else True
        if improved:
            self.best_loss, self.best_epoch, self.waited = monitored, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self.waited += 1
        return improved

    def patience_spent(self, config: TrainConfig) -> bool:
        return bool(config.early_stopping and self.waited >= config.early_stopping)

    def to_dict(self, epoch: int, max_epochs: int) -> dict:
        return {"epoch": epoch, "max_epochs": max_epochs, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "waited": self.waited, "best_state": self.best_state, "history": self.history}


def _start_loss(module: nn.Module, step: StepFn, val: Loader | None, par, precision: str | None,
                device: torch.device) -> float | None:
    """The validation loss of ``module`` as it is, before any training (``None`` without
    validation samples, or when it is not finite). The random number generators are put back
    afterwards, so that measuring it changes nothing in the training that follows."""
    if val is None:
        return None
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if cuda else None):
        sums = _loss_sums(module, step, val, precision) if len(val) else None
    # every process takes part in the sum, as after each epoch (same decision everywhere)
    _, loss, _ = par.epoch_means((0.0, 0.0), sums, False, device)
    return loss if loss is not None and math.isfinite(loss) else None


def _check_finite(monitored: float, epoch: int, config: TrainConfig) -> None:
    if not math.isfinite(monitored):
        raise FloatingPointError(
            f"The loss became {monitored} at epoch {epoch}: training diverged. Lower the "
            f"learning rate (lr={config.lr:g}), or check the data's scale for cost={config.cost!r}."
        )


def _scheduler(optimizer, config: TrainConfig):
    if config.lr_schedule != "plateau":
        return None
    patience = max(2, config.early_stopping // 3 if config.early_stopping else 5)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=patience)


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
    module, step, train, val, config, max_epochs, cancel, extra_parameters
        As in :func:`fit`.
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

    Yields
    ------
    EpochReport
        One per epoch; the best weights are loaded into ``module`` when the iterator ends.
    """
    params = [p for p in module.parameters() if p.requires_grad] + list(extra_parameters or [])
    device = next(iter(params)).device if params else torch.device("cpu")
    precision = check_precision(precision, device)
    par, train, val = dist_utils.Parallel.setup(module, step, extra_parameters, train, val, device, distributed)
    optimizer = build_optimizer(config.optimizer, params, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    state = {"module": module, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    prog, start = _Progress(), 1
    fingerprint = Checkpoint.fingerprint(module, train, val, config, precision, par.world) if checkpoint else None
    saved = checkpoint.restore(fingerprint, state, generator=train.generator, rank=par.rank,
                               device=device) if checkpoint else None
    if saved is not None:
        start = int(saved.pop("epoch")) + 1
        prog = _Progress(**{k: saved[k] for k in ("best_loss", "best_epoch", "best_state", "waited")},
                         history=[dict(r) for r in saved["history"]])
    if saved is None:
        # "epoch 0": the model as built is the first candidate for the weights kept
        start_loss = _start_loss(module, step, val, par, precision, device)
        if start_loss is not None:
            prog.update(start_loss, 0, module)
    else:
        start_loss = prog.history[-1].get("start_val_loss") if prog.history else None
    completed = False
    try:
        finished = bool(prog.history) and (start > max_epochs or prog.patience_spent(config))
        for epoch in range(start, max_epochs + 1 if not finished else start):
            t0 = time.perf_counter()
            module.train()
            total, n = torch.zeros((), device=device), 0.0
            for batch in train:
                if par.ddp is None and cancel is not None and cancel.is_set():
                    raise StopTraining("cancelled")
                with autocast(device, precision):
                    losses = par.losses(module, step, batch).float()
                loss, local, rows = par.batch_loss(losses, train)
                loss = loss + weight_penalty(module, config.l1, config.l2)
                total += local.detach()
                n += rows
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            val_sums = _loss_sums(module, step, val, precision) if val is not None and len(val) else None
            train_loss, val_loss, stop_all = par.epoch_means((float(total), n), val_sums,
                                                             cancel is not None and cancel.is_set(), device)
            monitored = train_loss if val_loss is None else val_loss
            _check_finite(monitored, epoch, config)
            improved = prog.update(monitored, epoch, module)
            if scheduler is not None:
                scheduler.step(monitored)
            report = EpochReport(epoch=epoch, max_epochs=max_epochs, train_loss=train_loss, val_loss=val_loss,
                                 lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
                                 best_epoch=prog.best_epoch, improved=improved, start_val_loss=start_loss)
            prog.history.append(asdict(report))
            stopping = prog.patience_spent(config)
            if checkpoint is not None and checkpoint.due(epoch, last=stopping or epoch == max_epochs):
                rngs = dist_utils.all_gather_object(rng_state())
                if par.rank == 0:
                    checkpoint.save_state(state, prog.to_dict(epoch, max_epochs), fingerprint=fingerprint,
                                          generator=train.generator, rngs=rngs)
                dist_utils.barrier()
            yield report
            if stop_all:
                raise StopTraining("cancelled")
            if stopping:
                break
        completed = True
    finally:
        # early stopping keeps the best weights; so does any interruption (cancel, error, close)
        if prog.best_state is not None and (config.early_stopping or not completed):
            module.load_state_dict(prog.best_state)
        module.eval()


def _mean_loss(module: nn.Module, step: StepFn, loader: Loader | None) -> float | None:
    """Mean per-sample loss over ``loader`` (``None`` for no loader)."""
    if loader is None or len(loader) == 0:
        return None
    total, n = _loss_sums(module, step, loader)
    return total / max(n, 1)


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
    """Train to the end and keep the best weights.

    ``callback(report)`` is called after each epoch; returning ``False`` (or raising
    :class:`StopTraining`) stops training, as does setting ``cancel``. A resumed run's history
    holds the epochs before the checkpoint too.

    Parameters
    ----------
    module
        The network to train (in place).
    step
        ``step(module, batch) -> loss`` for one mini-batch.
    train, val
        Loaders of the training and validation cells (``val`` may be ``None``).
    config
        The training choices (:class:`TrainConfig`).
    max_epochs
        The most epochs to run.
    progress
        Show a progress bar.
    callback
        Called with an :class:`EpochReport` after each epoch.
    cancel
        A ``threading.Event`` that stops training when set.
    description
        Label of the progress bar.
    extra_parameters
        Parameters trained beside the module's (e.g. a dispersion).
    precision, checkpoint, distributed
        See :func:`iter_fit`.

    Returns
    -------
    History
        The per-epoch losses and why training stopped.
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
