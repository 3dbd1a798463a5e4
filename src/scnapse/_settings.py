"""Package-wide settings: the default device, seed, threads and verbosity."""

from __future__ import annotations

import logging
import math
import os
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
    or ``"mps"``. ``seed`` is the seed of every step that is not given one. ``n_threads`` is the
    number of CPU threads training uses (torch and the BLAS/OpenMP pools alike): ``"auto"`` is the
    number of CPUs this process may actually use (its CPU affinity and cgroup quota), and one
    thread for recurrent networks (sequence models), which are faster on one
    (:data:`AUTO_THREAD_CAP`).
    """

    device: str = "auto"
    seed: int = 0
    n_threads: int | str = "auto"
    verbosity: int = logging.INFO

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "verbosity":
            logger.setLevel(value)


settings = Settings()


def _cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """CPUs allowed by the cgroup v2 quota (``/sys/fs/cgroup/cpu.max``), or ``None``."""
    try:
        with open(path) as fh:
            quota, period = fh.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.floor(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """The number of CPUs this process may use: its CPU affinity, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(n, quota) if quota else n)


#: The most threads ``n_threads="auto"`` gives a kind of training, where fewer are faster
#: (measured by ``benchmarks/threads.py``; figures in docs/benchmarks.md, "Threads"). A recurrent
#: network steps through time in matrix products too small to share between threads: a second
#: thread gains nothing on an idle machine, and on a busy one every step waits for the slower
#: thread. An explicit count (``threads=2``, ``settings.n_threads = 2``) is always used as given.
AUTO_THREAD_CAP: dict[str, int] = {"recurrent": 1}


def resolve_threads(threads: int | str | None = None, workload: str | None = None) -> int:
    """The thread count for ``threads`` (``None``: ``settings.n_threads``; ``"auto"``: the CPUs
    available to this process, capped for ``workload`` by :data:`AUTO_THREAD_CAP`).

    Parameters
    ----------
    threads
        A positive integer, ``"auto"`` or ``None``.
    workload
        The kind of training (``"recurrent"``; ``None``: any other), for ``"auto"``.

    Returns
    -------
    int
        The number of threads.
    """
    if threads is None:
        threads = settings.n_threads
    if isinstance(threads, str) and threads.strip().lower() == "auto":
        n = available_cpus()
        cap = AUTO_THREAD_CAP.get(workload) if workload is not None else None
        return min(n, cap) if cap else n
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: give a positive whole number of threads or 'auto'.")
    return threads


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
