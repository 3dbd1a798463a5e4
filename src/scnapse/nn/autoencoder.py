"""Autoencoders on expression profiles: plain, denoising (input noise is added by the training
step) and variational."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP
from .losses import check_cost


class AutoencoderModule(nn.Module):
    """Encoder ``MLP → latent``; decoder ``MLP(reversed hidden) → genes``.

    ``forward`` returns a dict: ``z`` (the embedding: the mean for a VAE), ``out`` (the decoder's
    raw output, read by :mod:`scnapse.nn.losses`), and ``mu``/``logvar`` for a VAE. Dropout acts on
    the encoder only, so the decoder learns from the whole code.

    ``linear_skip=True`` adds a linear path beside each MLP: ``z = Wₑx + bₑ + MLP(x)`` and
    ``out = W_d z + b_d + MLP(z)``. :meth:`init_pca` sets the linear paths to the principal
    components and zeroes the MLPs' last layers, so training starts from PCA's solution and the
    nonlinear layers learn what PCA misses.
    """

    def __init__(
        self,
        n_in: int,
        n_latent: int,
        hidden: Sequence[int],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        cost: str = "mse",
        variational: bool = False,
        linear_skip: bool = False,
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
        self.linear_skip = bool(linear_skip)
        if self.linear_skip:
            self.skip_in = nn.Linear(n_in, n_latent)
            self.skip_out = nn.Linear(n_latent, n_in)

    @torch.no_grad()
    def init_pca(self, mean: torch.Tensor, components: torch.Tensor, *, decoder: bool = True) -> None:
        """Start from PCA: ``components`` (k × genes, orthonormal rows, k ≤ n_latent) and the
        genes' ``mean`` of the encoder's input. The encoder's linear path gives the principal
        component scores; with ``decoder`` (an mse reconstruction) the decoder's gives PCA's
        reconstruction, otherwise it starts at zero. The MLPs' last layers start at zero."""
        if not self.linear_skip:
            raise RuntimeError("init_pca needs linear_skip=True.")
        k = components.shape[0]
        dev, dt = self.skip_in.weight.device, self.skip_in.weight.dtype
        P, mean = components.to(dev, dt), mean.to(dev, dt)
        self.skip_in.weight.zero_()
        self.skip_in.bias.zero_()
        self.skip_in.weight[:k] = P
        self.skip_in.bias[:k] = -(P @ mean)
        self.skip_out.weight.zero_()
        self.skip_out.bias.zero_()
        if decoder:
            self.skip_out.weight[:, :k] = P.T
            self.skip_out.bias.copy_(mean)
        n = self.n_latent
        self.to_latent.weight[:n].zero_()
        self.to_latent.bias[:n].zero_()
        if decoder:
            self.to_output.weight.zero_()
            self.to_output.bias.zero_()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` dense, or a sparse CSR tensor (inference: the first layer multiplies it as it is)."""
        layers = list(self.encoder) + [self.to_latent]
        first, rest = layers[0], layers[1:]
        w, b = first.weight, first.bias
        if self.linear_skip:  # one product for the first layer and the linear path
            w, b = torch.cat([w, self.skip_in.weight]), torch.cat([b, self.skip_in.bias])
        if x.layout == torch.sparse_csr:
            h = torch.addmm(b, x, w.t())
        else:
            h = F.linear(x, w, b)
        skip = None
        if self.linear_skip:
            h, skip = h.split([first.out_features, self.n_latent], dim=1)
        for layer in rest:
            h = layer(h)
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)
            return (mu if skip is None else mu + skip), logvar.clamp(-15, 15)
        return (h if skip is None else h + skip), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decoder(z)
        if not self.linear_skip:
            return self.to_output(h)
        # one product for the output layer and the linear path
        w = torch.cat([self.to_output.weight, self.skip_out.weight], dim=1)
        return F.linear(torch.cat([h, z], dim=1), w, self.to_output.bias + self.skip_out.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        else:
            z = mu
        return {"z": mu, "out": self.decode(z), "mu": mu, "logvar": logvar}
