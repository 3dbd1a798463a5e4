"""Package-wide settings: the default device, seed and verbosity."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("scnapse")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@dataclass
class Settings:
    """Defaults used where a step is given none.

    ``device`` is ``"auto"`` (CUDA, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``
    or ``"mps"``. ``seed`` is the seed of every step that is not given one.
    """

    device: str = "auto"
    seed: int = 0
    verbosity: int = logging.INFO

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "verbosity":
            logger.setLevel(value)


settings = Settings()


def available_devices() -> list[str]:
    """The devices that exist on this machine, ``"cpu"`` last."""
    import torch

    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn ``"auto"``/``None``/a name into a :class:`torch.device` that exists here."""
    import torch

    if device is None:
        device = settings.device
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but CUDA is not available here; "
                f"use device='auto' or one of {available_devices()}."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); use one of {available_devices()}."
            )
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError(f"device='mps' is not available here; use one of {available_devices()}.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(
        f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
        f"(available here: {available_devices()})."
    )
