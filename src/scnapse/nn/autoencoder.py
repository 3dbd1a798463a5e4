"""Autoencoders on expression profiles: plain, denoising (input noise is added by the training
step) and variational."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import MLP
from .losses import check_cost


class AutoencoderModule(nn.Module):
    """Encoder ``MLP → latent``; decoder ``MLP(reversed hidden) → genes``.

    ``forward`` returns a dict: ``z`` (the embedding: the mean for a VAE), ``out`` (the decoder's
    raw output, read by :mod:`scnapse.nn.losses`), and ``mu``/``logvar`` for a VAE. Dropout acts on
    the encoder only, so the decoder learns from the whole code.
    """

    def __init__(
        self,
        n_in: int,
        n_latent: int,
        hidden: Sequence[int] = (256, 128),
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        cost: str = "mse",
        variational: bool = False,
    ):
        super().__init__()
        self.cost = check_cost(cost)
        self.variational = bool(variational)
        self.encoder = MLP(n_in, hidden, activation=activation, dropout=dropout, batch_norm=batch_norm)
        self.to_latent = nn.Linear(self.encoder.n_out, n_latent * (2 if variational else 1))
        self.decoder = MLP(n_latent, list(hidden)[::-1], activation=activation, batch_norm=batch_norm)
        self.to_output = nn.Linear(self.decoder.n_out, n_in)
        if cost == "nb":
            self.log_theta = nn.Parameter(torch.zeros(n_in))
        self.n_latent = n_latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` dense, or a sparse CSR tensor (inference: the first layer multiplies it as it is)."""
        if x.layout == torch.sparse_csr:
            layers = list(self.encoder) + [self.to_latent]
            first = layers[0]
            h = torch.addmm(first.bias, x, first.weight.t())
            for layer in layers[1:-1]:
                h = layer(h)
            h = layers[-1](h) if len(layers) > 1 else h
        else:
            h = self.to_latent(self.encoder(x))
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)
            return mu, logvar.clamp(-15, 15)
        return h, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_output(self.decoder(z))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        else:
            z = mu
        return {"z": mu, "out": self.decode(z), "mu": mu, "logvar": logvar}
