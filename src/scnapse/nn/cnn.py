"""Compact convolutional networks for cell crops, and the image augmentations.

* :class:`ConvEncoder` — ``[conv 3×3 → batch norm → activation → max-pool 2×2]`` per block;
  each block halves the crop and widens the channels.
* :class:`ConvAutoencoderModule` — encoder, flatten, linear to the code; the decoder mirrors it
  with nearest-neighbour upsampling (an embedding of the whole crop, position included).
* :class:`CNNClassifierModule` — encoder, global average pooling (translation invariant:
  texture and pattern, wherever they are in the crop), dropout, linear to the classes.
* :class:`ContrastiveModule` — encoder, global average pooling, linear to the embedding, and a
  projection head for :func:`nt_xent`, the contrastive cost (two augmented views of each crop).
* :func:`augment_batch` — random flips, 90° rotations, brightness/contrast jitter and Gaussian
  noise, drawn per crop: the lecture's *dataset augmentation*, applied while training only.

Crops whose side is not a multiple of ``2**len(channels)`` are zero-padded inside the module (and
the reconstruction cut back), so any crop size from 8 pixels works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation

AUGMENTATIONS = ("flip", "rot90", "intensity", "noise")
#: momentum of the batch-norm running statistics. PyTorch's 0.1 lags far behind the weights when
#: a classifier trains for a few dozen steps on a few annotated cells: on the synthetic texture
#: set (20 cells per class, 10 epochs) validation loss rose from the first epoch with 0.1 and
#: held-out accuracy stayed at chance; with 0.5 it reached 0.83–0.98.
BN_MOMENTUM = 0.5

#: feature maps of the convolution blocks (each block halves the crop) unless given
DEFAULT_CHANNELS = (16, 32, 64)


def _block(c_in: int, c_out: int, activation: str, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM))
    layers.append(get_activation(activation))
    return layers


class ConvEncoder(nn.Module):
    """Convolution blocks; ``forward`` returns the feature map (``channels[-1]`` maps, side
    ``ceil(size / 2**len(channels))``)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        activation: str = "relu",
        batch_norm: bool = True,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels={channels!r} must be a non-empty list of positive widths.")
        layers: list[nn.Module] = []
        prev = int(in_channels)
        for width in channels:
            layers += _block(prev, width, activation, batch_norm)
            layers.append(nn.MaxPool2d(2))
            prev = width
        self.body = nn.Sequential(*layers)
        self.in_channels = int(in_channels)
        self.channels = channels
        self.factor = 2 ** len(channels)
        self.n_out = prev

    def padded_size(self, size: int) -> int:
        return -(-int(size) // self.factor) * self.factor

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h) - h, self.padded_size(w) - w
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.pad(x))


class CNNClassifierModule(nn.Module):
    """``ConvEncoder → global average pool → dropout → linear`` to class logits.

    ``embed(x)`` gives the pooled features (the classifier's view of a cell). With
    ``n_features > 0`` the logits also get a logistic-regression path on the cell's hand-made
    features ``f`` (standardised with the stored training mean / std):
    ``logits = head(pool(x)) + ((f - mean) / std) @ W.T + b``; :meth:`set_linear` sets that path
    and zeroes the CNN's head, so the model starts as logistic regression exactly.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        n_features: int = 0,
    ):
        super().__init__()
        self.encoder = ConvEncoder(in_channels, channels, activation=activation, batch_norm=batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.encoder.n_out, int(n_classes))
        self.n_classes = int(n_classes)
        self.n_features = int(n_features)
        if self.n_features:
            self.register_buffer("feature_mean", torch.zeros(self.n_features))
            self.register_buffer("feature_std", torch.ones(self.n_features))
            self.lr_weight = nn.Parameter(torch.zeros(self.n_classes, self.n_features))
            self.lr_bias = nn.Parameter(torch.zeros(self.n_classes))

    def set_standardisation(self, mean, std) -> None:
        with torch.no_grad():
            self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def set_linear(self, weight, bias, *, zero_head: bool = True) -> None:
        """Set the logistic-regression path (on standardised features) and zero the CNN's head,
        so that the logits start as logistic regression's."""
        with torch.no_grad():
            self.lr_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.lr_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
            if zero_head:
                self.head.weight.zero_()
                self.head.bias.zero_()

    def linear_logits(self, f: torch.Tensor) -> torch.Tensor:
        return ((f - self.feature_mean) / self.feature_std) @ self.lr_weight.T + self.lr_bias

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.head(self.dropout(self.embed(x)))
        if self.n_features:
            if f is None:
                raise ValueError("This classifier reads each cell's features too; pass them (cells × features).")
            logits = logits + self.linear_logits(f)
        return logits


class ConvAutoencoderModule(nn.Module):
    """Conv encoder → flatten → linear code (``n_latent``); decoder: linear → upsample+conv
    blocks → a 3×3 conv to the input channels. ``forward`` returns ``{"z", "out"}`` with ``out``
    the raw output, read by :mod:`scnapse.nn.losses` (``mse``: values, ``bce``: logits)."""

    def __init__(
        self,
        in_channels: int,
        size: int,
        n_latent: int = 16,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ):
        super().__init__()
        self.encoder = ConvEncoder(in_channels, channels, activation=activation, batch_norm=batch_norm)
        self.size = int(size)
        self.side = self.encoder.padded_size(size) // self.encoder.factor
        flat = self.encoder.n_out * self.side * self.side
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.to_latent = nn.Linear(flat, int(n_latent))
        self.from_latent = nn.Linear(int(n_latent), flat)
        layers: list[nn.Module] = [get_activation(activation)]
        widths = list(self.encoder.channels)[::-1]
        for i, width in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(nn.Conv2d(width, nxt, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(nxt, momentum=BN_MOMENTUM))
            layers.append(get_activation(activation))
        layers.append(nn.Conv2d(widths[-1], int(in_channels), kernel_size=3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.n_latent = int(n_latent)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x).flatten(1)
        return self.to_latent(self.dropout(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(z.shape[0], self.encoder.n_out, self.side, self.side)
        out = self.decoder(h)
        full = out.shape[-1]
        off = (full - self.size) // 2
        return out[..., off : off + self.size, off : off + self.size]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"z": z, "out": self.decode(z)}


class ContrastiveModule(nn.Module):
    """``ConvEncoder → global average pool → linear`` to the embedding (``n_latent``), and a small
    projection head on top for the contrastive cost (SimCLR-style: two augmented views of a crop
    should map close together and away from the other crops of the batch). ``encode`` gives the
    embedding; the head is used in training only."""

    def __init__(
        self,
        in_channels: int,
        n_latent: int = 16,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        n_projection: int = 32,
    ):
        super().__init__()
        self.encoder = ConvEncoder(in_channels, channels, activation=activation, batch_norm=batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.to_latent = nn.Linear(self.encoder.n_out, int(n_latent))
        self.head = nn.Sequential(get_activation(activation), nn.Linear(int(n_latent), int(n_projection)))
        self.n_latent = int(n_latent)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.dropout(self.encoder(x).mean(dim=(-2, -1))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        return {"z": z, "projection": self.head(z)}


def nt_xent(p1: torch.Tensor, p2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Per-crop normalised-temperature cross-entropy (SimCLR's NT-Xent) between two views.

    ``p1[i]`` and ``p2[i]`` are projections of two augmentations of crop ``i``; each view must
    pick its partner out of the other ``2n − 2`` views of the batch by cosine similarity / τ.
    Returns one loss per crop (the mean over its two views).
    """
    n = p1.shape[0]
    z = F.normalize(torch.cat([p1, p2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    losses = F.cross_entropy(sim, target, reduction="none")
    return 0.5 * (losses[:n] + losses[n:])


def augment_batch(
    x: torch.Tensor,
    augment: Sequence[str],
    *,
    intensity: float = 0.2,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A randomly transformed copy of the crops ``x`` (batch × channels × height × width).

    Each crop independently gets: ``flip`` — a left-right and an up-down flip, each with
    probability ½; ``rot90`` — a rotation by 0, 90, 180 or 270° (square crops); ``intensity`` —
    ``x · (1 + a) + b`` per crop and channel with ``a ~ U(−intensity, intensity)``,
    ``b ~ U(−intensity/2, intensity/2)``; ``noise`` — Gaussian noise of standard deviation
    ``noise``. Random numbers come from ``generator`` (default: torch's global one, seeded by
    the training step), so a seed reproduces the same augmentations.
    """
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}.")
    if not augment:
        return x
    n, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    if "flip" in augment:
        fx = (rand(n) < 0.5).view(n, 1, 1, 1)
        x = torch.where(fx, x.flip(-1), x)
        fy = (rand(n) < 0.5).view(n, 1, 1, 1)
        x = torch.where(fy, x.flip(-2), x)
    if "rot90" in augment and x.shape[-1] == x.shape[-2]:
        k = torch.randint(0, 4, (n,), generator=generator).to(dev)
        out = x.clone()
        for r in (1, 2, 3):
            sel = k == r
            if bool(sel.any()):
                out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        x = out
    if "intensity" in augment:
        c = x.shape[1]
        gain = 1 + (2 * rand(n, c, 1, 1) - 1) * intensity
        shift = (rand(n, c, 1, 1) - 0.5) * intensity
        x = x * gain + shift
    if "noise" in augment:
        x = x + noise * torch.randn(x.shape, generator=generator).to(dev)
    return x
