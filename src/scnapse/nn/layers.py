"""The fully connected stack every family builds on: Linear → (norm) → activation → dropout."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .activations import get_activation


class MLP(nn.Sequential):
    """Hidden layers ``Linear → [BatchNorm] → activation → [Dropout]`` for each size in ``hidden``.

    The output has ``hidden[-1]`` features (or ``n_in`` when ``hidden`` is empty). Put a plain
    :class:`torch.nn.Linear` after it for the output layer.
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        layers: list[nn.Module] = []
        prev = n_in
        for width in hidden:
            layers.append(nn.Linear(prev, int(width)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(width)))
            layers.append(get_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = int(width)
        super().__init__(*layers)
        self.n_out = prev
