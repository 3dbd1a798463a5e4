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

    ``linear_skip=True`` adds a linear path beside each MLP: ``z = Wₑx + bₑ + MLP(x)`` and
    ``out = W_d z + b_d + MLP(z)``. :meth:`init_pca` sets the linear paths to the principal
    components and zeroes the MLPs' last layers, so training starts from PCA's solution and the
    nonlinear layers learn what PCA misses.
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
        skip = None
        if x.layout == torch.sparse_csr:
            layers = list(self.encoder) + [self.to_latent]
            first = layers[0]
            if self.linear_skip:  # one sparse product for the first layer and the linear path
                w = torch.cat([first.weight, self.skip_in.weight]).t()
                b = torch.cat([first.bias, self.skip_in.bias])
                h, skip = torch.addmm(b, x, w).split([first.out_features, self.n_latent], dim=1)
            else:
                h = torch.addmm(first.bias, x, first.weight.t())
            for layer in layers[1:-1]:
                h = layer(h)
            h = layers[-1](h) if len(layers) > 1 else h
        else:
            if self.linear_skip:
                skip = self.skip_in(x)
            h = self.to_latent(self.encoder(x))
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)
            return (mu if skip is None else mu + skip), logvar.clamp(-15, 15)
        return (h if skip is None else h + skip), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.to_output(self.decoder(z))
        return out + self.skip_out(z) if self.linear_skip else out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        else:
            z = mu
        return {"z": mu, "out": self.decode(z), "mu": mu, "logvar": logvar}
