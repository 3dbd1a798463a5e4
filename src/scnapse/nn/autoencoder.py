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
        n_batches: int = 0,
        n_covariates: int = 0,
        batch_gain: bool = False,
    ):
        super().__init__()
        self.n_batches, self.n_covariates = int(n_batches), int(n_covariates)
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
        hidden = list(hidden)
        self.n_cond_hidden = int(hidden[0]) if hidden else 0
        if self.n_batches:  # one column per batch: added to the decoder's first layer and output
            self.batch_out = nn.Parameter(torch.zeros(n_in, self.n_batches))
            if self.n_cond_hidden:
                self.batch_hidden = nn.Parameter(torch.zeros(self.n_cond_hidden, self.n_batches))
            # the encoder's first product (hidden layer, and the linear path) gets a per-batch shift
            first = self.encoder[0] if len(self.encoder) else self.to_latent
            n_first = first.out_features + (n_latent if linear_skip else 0)
            self.batch_enc = nn.Parameter(torch.zeros(n_first, self.n_batches))
            if batch_gain:  # and a per-batch log-scale of that product (added by query mapping)
                self.batch_gain = nn.Parameter(torch.zeros(n_first, self.n_batches))
        if self.n_covariates:  # one-hot categorical and standardised continuous covariates
            self.cov_out = nn.Parameter(torch.zeros(n_in, self.n_covariates))
            if self.n_cond_hidden:
                self.cov_hidden = nn.Parameter(torch.zeros(self.n_cond_hidden, self.n_covariates))

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

    @torch.no_grad()
    def init_batch_means(self, mean: torch.Tensor, components: torch.Tensor, group_means: torch.Tensor, *,
                         decoder: bool = True) -> None:
        """After :meth:`init_pca` on batch-centred data: each batch's encoder shift removes its
        mean's offset from the scores, and (``decoder``) its output column adds it back."""
        k = components.shape[0]
        dev, dt = self.batch_enc.device, self.batch_enc.dtype
        delta = (group_means.to(dev, dt) - mean.to(dev, dt)).T  # genes × batches
        first = self.encoder[0] if len(self.encoder) else self.to_latent
        off = first.out_features
        self.batch_enc[off : off + k] = -(components.to(dev, dt) @ delta)
        if decoder:
            self.batch_out.copy_(delta)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` dense, or a sparse CSR tensor (inference: the first layer multiplies it as it is);
        ``cond`` the conditioning (batch one-hot first), read by a batch-aware model."""
        layers = list(self.encoder) + [self.to_latent]
        first, rest = layers[0], layers[1:]
        w, b = first.weight, first.bias
        if self.linear_skip:  # one product for the first layer and the linear path
            w, b = torch.cat([w, self.skip_in.weight]), torch.cat([b, self.skip_in.bias])
        if x.layout == torch.sparse_csr:
            h = torch.addmm(b, x, w.t())
        else:
            h = F.linear(x, w, b)
        if self.n_batches and cond is not None:
            gain = getattr(self, "batch_gain", None)
            if gain is not None:  # exp(0) = 1 exactly: batches without a scale are left as they are
                h = h * torch.exp(F.linear(cond[:, : self.n_batches], gain))
            h = h + F.linear(cond[:, : self.n_batches], self.batch_enc)
        skip = None
        if self.linear_skip:
            h, skip = h.split([first.out_features, self.n_latent], dim=1)
        for layer in rest:
            h = layer(h)
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)
            return (mu if skip is None else mu + skip), logvar.clamp(-15, 15)
        return (h if skip is None else h + skip), None

    def add_batches(self, n_new: int, *, init: str = "zeros", gain: bool = False) -> list[torch.Tensor]:
        """Append ``n_new`` batch columns to every batch parameter: zero (``init="zeros"``), or the
        mean of the existing batches' columns (``"mean"``: the new batches start as the average
        batch). With ``gain``, the encoder's first product also gets a per-batch log-scale
        (``batch_gain``; zero, a scale of exactly 1, for the existing batches and at the start). The
        gradients of the existing columns are zeroed by hooks, so an optimizer without weight decay
        leaves them bit-identical. Returns the enlarged parameters."""
        if init not in ("zeros", "mean"):
            raise ValueError(f"init={init!r}: choose 'mean' or 'zeros'.")
        n_old, params = self.n_batches, []
        if gain and getattr(self, "batch_gain", None) is None and n_old:
            self.batch_gain = nn.Parameter(self.batch_enc.detach().new_zeros(self.batch_enc.shape))
        for name in ("batch_enc", "batch_gain", "batch_hidden", "batch_out"):
            old = getattr(self, name, None)
            if old is None:
                continue
            mean_start = init == "mean" and n_old and name != "batch_gain"
            start = old.detach().mean(1, keepdim=True) if mean_start else old.new_zeros(old.shape[0], 1)
            new = nn.Parameter(torch.cat([old.detach(), start.expand(-1, n_new)], dim=1))
            mask = torch.zeros_like(new)
            mask[:, n_old:] = 1
            new.register_hook(lambda g, m=mask: g * m)
            setattr(self, name, new)
            if name != "batch_gain" or gain:
                params.append(new)
        self.n_batches = n_old + n_new
        return params

    def condition_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(hidden, out)``: the conditioning's weights (rows: the decoder's first layer and the
        genes; columns: batches then covariates), or ``None``."""
        hid, out = [], []
        if self.n_batches:
            out.append(self.batch_out)
            if self.n_cond_hidden:
                hid.append(self.batch_hidden)
        if self.n_covariates:
            out.append(self.cov_out)
            if self.n_cond_hidden:
                hid.append(self.cov_hidden)
        return (torch.cat(hid, 1) if hid else None), (torch.cat(out, 1) if out else None)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        w_hid, w_out = self.condition_weights() if cond is not None else (None, None)
        if w_hid is not None:
            layers = list(self.decoder)
            h = layers[0](z) + F.linear(cond, w_hid)
            for layer in layers[1:]:
                h = layer(h)
        else:
            h = self.decoder(z)
        if not self.linear_skip:
            out = self.to_output(h)
        else:
            # one product for the output layer and the linear path
            w = torch.cat([self.to_output.weight, self.skip_out.weight], dim=1)
            out = F.linear(torch.cat([h, z], dim=1), w, self.to_output.bias + self.skip_out.bias)
        if w_out is not None:
            out = out + F.linear(cond, w_out)
        return out

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x, cond)
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        else:
            z = mu
        return {"z": mu, "out": self.decode(z, cond), "mu": mu, "logvar": logvar}
