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
    number of CPUs this process may actually use (its CPU affinity and cgroup quota) less those
    that other programs keep busy when the step starts (:func:`busy_cpus`), and one thread for
    recurrent networks (sequence models), which are faster on one (:data:`AUTO_THREAD_CAP`).
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


def _cpu_times(cpus) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks of each CPU in ``cpus`` so far, from ``/proc/stat``."""
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *ticks = line.split()
            cpu = int(name[3:])
            if cpu not in cpus:
                continue
            t = [int(x) for x in ticks[:8]]  # user nice system idle iowait irq softirq steal
            idle = t[3] + t[4]
            out[cpu] = (sum(t) - idle, sum(t))
    return out


#: the latest readings of the CPUs' clock ticks: (perf_counter seconds, per-CPU ticks, own CPU seconds)
_cpu_samples: list[tuple[float, dict, float]] = []


def _cpu_sample(cpus) -> tuple[float, dict, float]:
    import time

    return time.perf_counter(), _cpu_times(cpus), time.process_time()


def _keep_sample(sample) -> None:
    _cpu_samples.append(sample)
    del _cpu_samples[:-4]


def note_cpu_sample() -> None:
    """Read the CPUs' clock ticks now, so that the next :func:`busy_cpus` can measure over the time
    since (a training step calls it when it ends)."""
    try:
        _keep_sample(_cpu_sample(os.sched_getaffinity(0)))
    except (AttributeError, OSError, ValueError):
        pass


def busy_cpus(window: float = 0.1, max_age: float = 5.0) -> int:
    """How many of this process's CPUs other programs keep busy: their busy time (from
    ``/proc/stat``, less this process's own CPU time), in whole CPUs, a CPU counted as taken from
    0.3 of one (a thread that shares a CPU with another program slows every step of the others, so
    a wrong "free" costs more than a wrong "taken"). 0 where it cannot be measured (no
    ``/proc/stat``).

    The time measured over starts at the latest earlier reading that is between ``window`` and
    ``max_age`` seconds old (steps run one after another measure over the previous step, at no
    cost); with none, it waits until ``window`` seconds have passed since the oldest younger
    reading, or since a fresh one.

    Parameters
    ----------
    window
        The least time measured over, in seconds.
    max_age
        The oldest reading still used, in seconds; 0 always measures afresh.

    Returns
    -------
    int
        The number of CPUs taken by other work.
    """
    import time

    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return 0
    try:
        now = time.perf_counter()
        same = [r for r in _cpu_samples if set(r[1]) == set(cpus) and now - r[0] <= max_age]
        older = [r for r in same if now - r[0] >= window]
        if older:
            t0, before, own0 = older[-1]
        else:
            t0, before, own0 = same[0] if same else _cpu_sample(cpus)
            time.sleep(max(0.0, window - (time.perf_counter() - t0)))
        t1, after, own1 = sample = _cpu_sample(cpus)
        _keep_sample(sample)
    except (OSError, ValueError):
        return 0
    busy = 0.0
    for cpu, (b1, n1) in after.items():
        b0, n0 = before.get(cpu, (b1, n1))
        if n1 > n0:
            busy += (b1 - b0) / (n1 - n0)
    own = (own1 - own0) / max(t1 - t0, 1e-9)
    return max(0, math.floor(busy - own + 0.7))


#: The most threads ``n_threads="auto"`` gives a kind of training, where fewer are faster
#: (measured by ``benchmarks/threads.py``; figures in docs/benchmarks.md, "Threads"). A recurrent
#: network steps through time in matrix products too small to share between threads: a second
#: thread gains nothing on an idle machine, and on a busy one every step waits for the slower
#: thread. A dense network whose steps are small ("small-step": mini-batches of at most
#: :data:`SMALL_BATCH` samples, as the cell classifier's default of 32, or fewer than
#: :data:`SMALL_STEP` multiply-adds in its first layer per step, as the autoencoder on a few
#: thousand genes) does too little work per operation to share: with OpenMP's threads waiting
#: passively (scnapse's default), every operation wakes the second thread, and two threads trained
#: the autoencoder on 765 genes 1.5× and the classifier 4× slower than one on an idle machine.
#: An explicit count (``threads=2``, ``settings.n_threads = 2``) is always used as given.
AUTO_THREAD_CAP: dict[str, int] = {"recurrent": 1, "small-step": 1}

#: the largest mini-batch that counts as "small-step" work (:data:`AUTO_THREAD_CAP`)
SMALL_BATCH = 32

#: fewer multiply-adds than this in a dense network's first layer per step count as "small-step"
#: work (:data:`AUTO_THREAD_CAP`): 128 cells × 2,000 genes × 128 units (3.3e7) trained as fast on
#: two threads as on one, 256 × 765 × 256 (5.0e7) 10 % faster on two
SMALL_STEP = 40_000_000


def resolve_threads(threads: int | str | None = None, workload: str | None = None) -> int:
    """The thread count for ``threads`` (``None``: ``settings.n_threads``; ``"auto"``: the CPUs
    available to this process less those other programs keep busy now (:func:`busy_cpus`), at
    least one, capped for ``workload`` by :data:`AUTO_THREAD_CAP`).

    Two threads on two CPUs with one of them taken by another program train 1.4–1.7× slower than
    one thread, and on an idle machine 1.5–1.8× faster (``benchmarks/threads.py``): the count that
    is fastest depends on the load, so ``"auto"`` measures it when a step starts. Results are
    bit-identical between runs with the same count, which every step records; give a count
    (``threads=2``, ``settings.n_threads = 2``) to use it whatever the load.

    Parameters
    ----------
    threads
        A positive integer, ``"auto"`` or ``None``.
    workload
        The kind of training (``"recurrent"``, ``"small-step"``; ``None``: any other), for ``"auto"``.

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
        if cap:
            n = min(n, cap)
        if n > 1:
            n = max(1, n - busy_cpus())
        return n
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
