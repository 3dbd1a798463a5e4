"""The one training loop every scnapse model uses.

``iter_fit`` is a generator that trains and yields an :class:`EpochReport` after each epoch, so a
napari ``thread_worker`` can pass it on as it is; ``fit`` runs it to the end with a progress bar
and callbacks. Whichever way training ends — finished, early-stopped, cancelled, or closed — the
best weights seen so far (by validation loss) are put back into the model.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

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


def _mean_loss(module: nn.Module, step: StepFn, loader: Loader) -> float | None:
    if loader is None or len(loader) == 0:
        return None
    module.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            losses = step(module, batch, False)
            total += float(losses.sum())
            n += losses.shape[0]
    return total / max(n, 1)


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
) -> Iterator[EpochReport]:
    """Train ``module`` and yield a report after each epoch; see the module docstring."""
    params = [p for p in module.parameters() if p.requires_grad] + list(extra_parameters or [])
    optimizer = build_optimizer(
        config.optimizer, params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = None
    if config.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(2, config.early_stopping // 3 if config.early_stopping else 5)
        )
    best_loss, best_epoch, best_state, waited = math.inf, 0, None, 0
    completed = False
    try:
        for epoch in range(1, max_epochs + 1):
            t0 = time.perf_counter()
            module.train()
            total = torch.zeros((), device=next(iter(params)).device if params else "cpu")
            n = 0
            for batch in train:
                if cancel is not None and cancel.is_set():
                    raise StopTraining("cancelled")
                losses = step(module, batch, True)
                loss = losses.mean() + weight_penalty(module, config.l1, config.l2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += losses.detach().sum()
                n += losses.shape[0]
            train_loss = float(total) / max(n, 1)
            val_loss = _mean_loss(module, step, val)
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
            yield EpochReport(
                epoch=epoch, max_epochs=max_epochs, train_loss=train_loss, val_loss=val_loss,
                lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
                best_epoch=best_epoch, improved=improved,
            )
            if config.early_stopping and waited >= config.early_stopping:
                break
        completed = True
    finally:
        # early stopping keeps the best weights; so does any interruption (cancel, error, close)
        if best_state is not None and (config.early_stopping or not completed):
            module.load_state_dict(best_state)
        module.eval()


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
) -> History:
    """Train to the end; return the :class:`History`.

    ``callback(report)`` is called after each epoch; returning ``False`` (or raising
    :class:`StopTraining`) stops training, as does setting ``cancel``. The best weights are kept.
    """
    history = History(stopped="max_epochs")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc=description, unit="epoch", leave=False)
    gen = iter_fit(module, step, train, val, config, max_epochs=max_epochs, cancel=cancel,
                   extra_parameters=extra_parameters)
    try:
        for report in gen:
            history.add(report)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{report.train_loss:.4g}",
                                val="-" if report.val_loss is None else f"{report.val_loss:.4g}")
            if callback is not None and callback(report) is False:
                history.stopped = "callback"
                break
        else:
            if history.epoch and history.epoch[-1] < max_epochs:
                history.stopped = "early_stopping"
    except StopTraining:
        history.stopped = "cancelled"
    finally:
        gen.close()
        if bar is not None:
            bar.close()
    return history
