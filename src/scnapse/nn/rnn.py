"""Recurrent networks on padded sequences: an encoder and the classification, autoencoder and
forecasting modules built on it. Pure torch: no AnnData.

Sequences arrive padded, shape (batch, T, features), with their true ``lengths``. Every module
packs them (:func:`torch.nn.utils.rnn.pack_padded_sequence`) so the recurrent cells never read a
padded step: the final state of each sequence is the state after its own last observation, and
the backward direction of a bidirectional encoder starts there too. Losses over steps use
:func:`step_mask`, so padding never reaches a loss either.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .layers import MLP

Cell = Literal["gru", "lstm"]
CELLS: tuple[str, ...] = get_args(Cell)


def check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not a recurrent cell scnapse knows; choose one of {list(CELLS)}.")
    return cell


def _rnn(cell: str, n_in: int, hidden: int, n_layers: int, bidirectional: bool, dropout: float) -> nn.RNNBase:
    cls = nn.GRU if check_cell(cell) == "gru" else nn.LSTM
    # torch applies dropout between stacked layers only; with one layer it would warn
    return cls(n_in, hidden, num_layers=n_layers, batch_first=True, bidirectional=bidirectional,
               dropout=dropout if n_layers > 1 else 0.0)


def step_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """Boolean (batch, T): True on the real steps ``t < length``, False on padding."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class SequenceEncoder(nn.Module):
    """GRU/LSTM over padded sequences; returns each sequence's summary vector.

    The summary is the last layer's final hidden state (both directions concatenated when
    ``bidirectional``), taken at each sequence's own last real step.
    """

    def __init__(self, n_in: int, hidden: int = 64, n_layers: int = 1, *, cell: str = "gru",
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.cell, self.bidirectional, self.n_layers = cell, bool(bidirectional), int(n_layers)
        self.rnn = _rnn(cell, n_in, int(hidden), self.n_layers, self.bidirectional, dropout)
        self.n_out = int(hidden) * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, *, return_state: bool = False):
        packed = pack_padded_sequence(x, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # (layers * directions, batch, hidden)
        if self.bidirectional:
            summary = torch.cat([h[-2], h[-1]], dim=1)
        else:
            summary = h[-1]
        return (summary, state) if return_state else summary

    def outputs(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-step outputs (batch, T, n_out), zero on padded steps."""
        packed = pack_padded_sequence(x, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class SequenceClassifierModule(nn.Module):
    """Encoder → MLP head → class logits."""

    def __init__(self, n_in: int, n_classes: int, hidden: int = 64, n_layers: int = 1, *, cell: str = "lstm",
                 bidirectional: bool = True, dropout: float = 0.1, head: tuple[int, ...] = (),
                 activation: str = "relu", linear: bool = False):
        super().__init__()
        self.encoder = SequenceEncoder(n_in, hidden, n_layers, cell=cell, bidirectional=bidirectional,
                                       dropout=dropout)
        self.head = MLP(self.encoder.n_out, head, activation=activation, dropout=dropout)
        self.drop = nn.Dropout(dropout) if dropout > 0 and not head else nn.Identity()
        self.out = nn.Linear(self.head.n_out, n_classes)
        self.linear = bool(linear)
        if self.linear:
            # logistic regression on standardised summary features (see set_linear); trained on with the rest
            n_s = n_summary(n_in)
            self.register_buffer("summary_mean", torch.zeros(n_s))
            self.register_buffer("summary_std", torch.ones(n_s))
            self.lr_weight = nn.Parameter(torch.zeros(n_classes, n_s))
            self.lr_bias = nn.Parameter(torch.zeros(n_classes))

    def set_linear(self, mean, std, weight, bias) -> None:
        """Set the logistic-regression path and zero the recurrent output, so the logits start as
        logistic regression's exactly."""
        with torch.no_grad():
            for name, v in (("summary_mean", mean), ("summary_std", std), ("lr_weight", weight), ("lr_bias", bias)):
                getattr(self, name).copy_(torch.as_tensor(v, dtype=torch.float32))
            self.out.weight.zero_()
            self.out.bias.zero_()

    def linear_logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        z = (summary_features(x, lengths) - self.summary_mean) / self.summary_std
        return z @ self.lr_weight.T + self.lr_bias

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.head(self.drop(self.encoder(x, lengths))))
        return logits + self.linear_logits(x, lengths) if self.linear else logits


#: the summary features of each input channel, then the sequence's length
SUMMARY_STATS = ("mean", "std", "min", "max", "first", "last", "slope")


def n_summary(n_in: int) -> int:
    return len(SUMMARY_STATS) * n_in + 1


def summary_features(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch, 7 * features + 1): per channel mean, std, min, max, first, last and least-squares
    slope per step over the real steps, then the length (names: :data:`SUMMARY_STATS`)."""
    T = x.shape[1]
    m = step_mask(lengths, T)[:, :, None]
    n = lengths.float().clamp_min(1)[:, None]
    mf = m.float()
    mean = (x * mf).sum(1) / n
    dev = (x - mean[:, None]) * mf
    std = ((dev**2).sum(1) / n).sqrt()
    big = torch.finfo(x.dtype).max
    lo = torch.where(m, x, torch.full_like(x, big)).amin(1)
    hi = torch.where(m, x, torch.full_like(x, -big)).amax(1)
    first = x[:, 0]
    last = x[torch.arange(x.shape[0], device=x.device), (lengths.long() - 1).clamp_min(0)]
    t = torch.arange(T, device=x.device, dtype=x.dtype)[None, :, None]
    tc = (t - (lengths.float()[:, None, None] - 1) / 2) * mf
    slope = (tc * dev).sum(1) / (tc**2).sum(1).clamp_min(1e-12)
    return torch.cat([mean, std, lo, hi, first, last, slope, lengths.float()[:, None]], dim=1)


class SequenceAutoencoderModule(nn.Module):
    """Sequence autoencoder: encoder → code ``z`` (the embedding) → recurrent decoder.

    The decoder reads ``z`` at every step (plus the step's position, so it can tell steps apart)
    and writes the whole sequence back; it never sees the input, so everything it reconstructs
    must pass through ``z``.
    """

    def __init__(self, n_in: int, n_latent: int = 8, hidden: int = 64, n_layers: int = 1, *, cell: str = "gru",
                 bidirectional: bool = True, dropout: float = 0.0, n_out: int | None = None):
        super().__init__()
        self.encoder = SequenceEncoder(n_in, hidden, n_layers, cell=cell, bidirectional=bidirectional,
                                       dropout=dropout)
        self.to_latent = nn.Linear(self.encoder.n_out, n_latent)
        self.decoder = _rnn(cell, n_latent + 1, hidden, n_layers, False, dropout)
        self.from_latent = nn.Linear(n_latent, hidden * n_layers)
        self.out = nn.Linear(hidden, n_out or n_in)
        self.n_layers, self.hidden, self.cell = n_layers, hidden, cell

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x, lengths))

    def decode(self, z: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
        b = z.shape[0]
        pos = torch.arange(T, device=z.device, dtype=z.dtype)[None, :, None].expand(b, T, 1) / max(T, 1)
        inp = torch.cat([z[:, None, :].expand(b, T, z.shape[1]), pos], dim=2)
        h0 = torch.tanh(self.from_latent(z)).view(b, self.n_layers, self.hidden).transpose(0, 1).contiguous()
        state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        packed = pack_padded_sequence(inp, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False)
        out, _ = self.decoder(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return self.out(out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x, lengths)
        return {"z": z, "out": self.decode(z, lengths, x.shape[1])}


class ForecasterModule(nn.Module):
    """Sequence-to-sequence forecaster for the next ``horizon`` steps.

    A unidirectional encoder reads the history (it must not see the future); its final state starts
    a decoder cell that steps forward one time point at a time. Each step reads the previous value
    and predicts the change from it, so "no change" (persistence) is the easy starting point. With
    ``teacher`` values given, each step reads the true previous value with probability
    ``teacher_forcing`` (training only); otherwise it reads its own previous prediction, as at
    evaluation and prediction time.
    """

    def __init__(self, n_in: int, n_out: int, horizon: int, hidden: int = 64, n_layers: int = 1, *,
                 cell: str = "gru", dropout: float = 0.0, ar_order: int = 0):
        super().__init__()
        self.horizon, self.n_out, self.cell, self.ar_order = int(horizon), int(n_out), cell, int(ar_order)
        self.encoder = SequenceEncoder(n_in, hidden, n_layers, cell=cell, bidirectional=False, dropout=dropout)
        self.decoder = _rnn(cell, n_out, hidden, n_layers, False, dropout)
        self.out = nn.Linear(hidden, n_out)
        if self.ar_order:
            # the linear autoregressive path (fitted in closed form, see set_ar); fixed while training
            self.register_buffer("ar_weight", torch.zeros(n_out, self.ar_order * n_out))
            self.register_buffer("ar_bias", torch.zeros(n_out))

    def set_ar(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the autoregressive path (weight (n_out, p * n_out), bias (n_out,)) and zero the
        recurrent output layer, so the forecast starts as the linear AR forecast exactly."""
        self.ar_weight.copy_(torch.as_tensor(weight, dtype=self.ar_weight.dtype))
        self.ar_bias.copy_(torch.as_tensor(bias, dtype=self.ar_bias.dtype))
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, *, teacher: torch.Tensor | None = None,
                teacher_forcing: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        _, state = self.encoder(x, lengths, return_state=True)
        last_idx = (lengths - 1).clamp_min(0).long()
        prev = x[torch.arange(x.shape[0], device=x.device), last_idx, : self.n_out]
        window = ar_window(x, lengths, self.ar_order, self.n_out) if self.ar_order else None
        preds = []
        for k in range(self.horizon):
            out, state = self.decoder(prev[:, None, :], state)
            start = prev if window is None else window.flatten(1) @ self.ar_weight.T + self.ar_bias
            y = start + self.out(out[:, 0])
            preds.append(y)
            if teacher is not None and teacher_forcing > 0:
                use = torch.rand(y.shape[0], 1, device=y.device) < teacher_forcing
                prev = torch.where(use, teacher[:, k], y)
            else:
                prev = y
            if window is not None:
                window = torch.cat([window[:, 1:], prev[:, None, :]], dim=1)
        return torch.stack(preds, dim=1)  # (batch, horizon, n_out)


def ar_window(x: torch.Tensor, lengths: torch.Tensor, p: int, n_out: int) -> torch.Tensor:
    """The last ``p`` real steps of each sequence, (batch, p, n_out), oldest first; a history
    shorter than ``p`` repeats its first step."""
    idx = (lengths.long()[:, None] - p + torch.arange(p, device=x.device)[None, :]).clamp_min(0)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx, :n_out]


def ar_forecast(x: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: int,
                n_out: int, horizon: int) -> torch.Tensor:
    """The linear autoregressive forecast (batch, horizon, n_out), each step fed back as history."""
    window = ar_window(x, lengths, p, n_out)
    preds = []
    for _ in range(horizon):
        y = window.flatten(1) @ weight.T + bias
        preds.append(y)
        window = torch.cat([window[:, 1:], y[:, None, :]], dim=1)
    return torch.stack(preds, dim=1)


def persistence_forecast(x: torch.Tensor, lengths: torch.Tensor, n_out: int, horizon: int) -> torch.Tensor:
    """The last real value repeated ``horizon`` times (batch, horizon, n_out)."""
    last = x[torch.arange(x.shape[0], device=x.device), (lengths.long() - 1).clamp_min(0), :n_out]
    return last[:, None, :].expand(-1, horizon, -1)
