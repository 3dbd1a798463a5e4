"""A multi-layer perceptron classifier, temperature scaling and calibration error (pure PyTorch).

The module returns logits; the user-facing :class:`scnapse.models.CellClassifier` turns them into
probabilities with ``softmax(logits / T)``, ``T`` fitted on held-out cells by
:func:`fit_temperature` so that the confidence it reports means what it says (Guo et al. 2017,
"On calibration of modern neural networks").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP


class ClassifierModule(nn.Module):
    """``MLP(hidden) → Linear(n_classes)``: logits of ``n_classes`` classes; with ``linear`` a
    linear path ``Linear(n_in, n_classes)`` is added beside it (logits = linear path + MLP), so that
    :meth:`init_linear` can start training at a logistic regression's solution.

    ``temperature`` (a buffer, saved with the weights) divides the logits in :meth:`probabilities`;
    it is 1 until :func:`fit_temperature` sets it.
    """

    def __init__(
        self,
        n_in: int,
        n_classes: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        linear: bool = False,
    ):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"A classifier needs at least 2 classes, got {n_classes}.")
        self.body = MLP(n_in, hidden, activation=activation, dropout=dropout, batch_norm=batch_norm)
        self.head = nn.Linear(self.body.n_out, n_classes)
        # with no hidden layer the head is itself the linear model: no second path
        self.linear = nn.Linear(n_in, n_classes) if linear and len(self.body) else None
        self.register_buffer("temperature", torch.ones(()))
        self.n_in, self.n_classes = int(n_in), int(n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        return out if self.linear is None else out + self.linear(x)

    @torch.no_grad()
    def init_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start at the linear model ``logits = x @ weight.T + bias``: the linear path (or, with
        no hidden layer, the head) takes it and the nonlinear part's output layer starts at zero.
        The linear path is then kept fixed (measured: training it too lets the network drift below
        the logistic regression on small references); a head alone stays trainable."""
        target = self.head if self.linear is None else self.linear
        target.weight.copy_(weight.to(target.weight))
        target.bias.copy_(bias.to(target.bias))
        if self.linear is not None:
            self.head.weight.zero_()
            self.head.bias.zero_()
            # the linear path stays the exact logistic regression; the MLP learns what it misses
            self.linear.requires_grad_(False)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities ``softmax(logits / temperature)``."""
        return F.softmax(self(x) / self.temperature, dim=1)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample softmax cross-entropy ``−log softmax(logits)[target]``, times ``weight[target]``."""
    loss = F.cross_entropy(logits, target, reduction="none")
    if weight is not None:
        loss = loss * weight[target]
    return loss


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    One parameter, so a bounded golden-section search on ``log T`` (the NLL is smooth and
    unimodal in practice); deterministic, no optimiser state. Returns 1.0 for no data.
    """
    if len(target) == 0:
        return 1.0
    logits = logits.detach().double()
    target = target.detach().long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / float(torch.tensor(log_t).exp()), target))

    lo, hi = float(torch.tensor(bounds[0]).log()), float(torch.tensor(bounds[1]).log())
    ratio = (5**0.5 - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    best = (a + b) / 2
    # keep T = 1 unless scaling really helps (ties on tiny validation sets)
    return float(torch.tensor(best).exp()) if nll(best) < nll(0.0) - 1e-9 else 1.0


def expected_calibration_error(probabilities: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: ``Σ_b (|b| / n) · |accuracy(b) − confidence(b)|`` over equal-width confidence bins
    (the confidence of a cell is its top probability)."""
    if len(target) == 0:
        return float("nan")
    conf, pred = probabilities.max(dim=1)
    correct = (pred == target).double()
    conf = conf.double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    ece = 0.0
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        in_bin = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += float(in_bin.double().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs())
    return ece
