"""Optimizers by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import OPTIMIZERS


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """A PyTorch optimizer by name.

    Parameters
    ----------
    name
        ``sgd``, ``momentum``, ``nesterov``, ``rmsprop``, ``adagrad``, ``adam`` or ``adamw``.
    params
        The parameters to optimise.
    lr
        Learning rate.
    momentum
        Momentum of ``momentum``, ``nesterov`` and ``rmsprop``.
    weight_decay
        PyTorch's ``weight_decay``: decoupled for ``adamw``, an L2 term added to the gradient for
        the others.

    Returns
    -------
    torch.optim.Optimizer
        The optimizer.
    """
    params = list(params)
    # one fused kernel per step instead of a dozen per tensor (CPU and CUDA; same numbers each run)
    fused = {"fused": True} if params and all(p.device.type in ("cpu", "cuda") for p in params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.")
