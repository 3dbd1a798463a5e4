"""Seeding, determinism and a record of the environment."""

from __future__ import annotations

import platform
import random
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch.

    Parameters
    ----------
    seed
        The seed.
    deterministic
        Also ask PyTorch for deterministic kernels (CUDA).

    Returns
    -------
    torch.Generator
        A CPU generator for splits and shuffling, seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("scnapse", "torch", "numpy", "scipy", "anndata", "scanpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def environment(device: torch.device | str) -> dict:
    """What produced a result: versions, device, platform, threads.

    Parameters
    ----------
    device
        The device the step ran on.

    Returns
    -------
    dict
        Plain values (strings and numbers), ready for ``adata.uns``.
    """
    env = {
        "versions": package_versions(),
        "device": str(device),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env
