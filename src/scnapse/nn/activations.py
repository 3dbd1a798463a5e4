"""Activation functions by name."""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

Activation = Literal["relu", "sigmoid", "tanh", "softplus", "leaky_relu", "elu", "gelu"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

_MODULES = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return _MODULES[name]()
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; choose one of {list(ACTIVATIONS)}.") from None
