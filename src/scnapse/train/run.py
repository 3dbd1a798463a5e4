"""``RunOptions``: how one training run is carried out, as opposed to what is trained.

:class:`~scnapse.train.TrainConfig` holds the choices that change the model (cost, optimizer,
regularisation, ...). ``RunOptions`` holds the rest: progress display, callbacks, cancel, mixed
precision, checkpoints and resume, the shuffled-chunk size of backed data, and distributed data
parallel. Every model's ``fit`` takes ``run=RunOptions(...)``; the public steps also accept each
field as a keyword argument (``progress=False, checkpoint_dir="ckpt"``), which
:meth:`RunOptions.from_kwargs` collects.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

from .config import OptionError


@dataclass
class RunOptions:
    """How a training run is carried out (not what it learns).

    Parameters
    ----------
    progress
        Show a progress bar (tqdm).
    callback
        Called with an :class:`~scnapse.train.EpochReport` after each epoch; return ``False`` to stop.
    cancel
        A ``threading.Event``; setting it stops training and keeps the best model so far.
    precision
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (GPU only): mixed-precision training.
    checkpoint_dir
        Save the whole training state in this folder every ``checkpoint_every`` epochs.
    checkpoint_every
        Epochs between checkpoints (the last epoch is always saved).
    resume
        Continue an interrupted run from ``checkpoint_dir``; it ends as the uninterrupted run would.
    chunk_size
        Rows per shuffled chunk (see :class:`~scnapse.train.Loader`; backed data are read in
        chunks of 16,384 rows by default).
    distributed
        ``None``: distributed data parallel when launched by ``torchrun`` with several processes;
        ``False``: never.
    threads
        CPU threads for training (torch and the BLAS/OpenMP pools): a positive integer, ``"auto"``
        (the CPUs this process may use less those other programs keep busy when the step starts)
        or ``None`` (``scnapse.settings.n_threads``). Results are bit-identical only between runs
        with the same count, so the count used is recorded in provenance.
    """

    progress: bool = True
    callback: Callable | None = None
    cancel: threading.Event | None = None
    precision: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    resume: bool = False
    chunk_size: int | None = None
    distributed: bool | None = None
    threads: int | str | None = None

    def __post_init__(self):
        if self.threads is not None:
            from .._settings import resolve_threads

            try:
                resolve_threads(self.threads)
            except ValueError as err:
                raise OptionError(str(err)) from None
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir= (the folder the interrupted run saved to).")
        if self.cancel is not None and not hasattr(self.cancel, "is_set"):
            raise TypeError(f"cancel must be a threading.Event, not {type(self.cancel).__name__}.")
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be a function taking an EpochReport.")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, run: RunOptions | None, kwargs: dict) -> RunOptions:
        """The run options of ``run`` updated by the run-option keywords in ``kwargs``, which are
        removed from ``kwargs`` (what is left are the step's other options)."""
        if run is not None and not isinstance(run, RunOptions):
            raise OptionError(f"run must be a scnapse.train.RunOptions, not {type(run).__name__}.")
        given = {k: kwargs.pop(k) for k in cls.field_names() if k in kwargs}
        base = run if run is not None else cls()
        return dataclasses.replace(base, **given) if given else base

    @classmethod
    def resolve(cls, run: RunOptions | None, kwargs: dict) -> RunOptions:
        """Like :meth:`from_kwargs`, refusing any keyword that is not a run option."""
        kwargs = dict(kwargs)
        out = cls.from_kwargs(run, kwargs)
        if kwargs:
            raise OptionError(
                f"Unknown option(s) {sorted(kwargs)}; the run options are {list(cls.field_names())} "
                "(training choices belong to the model: pass them when creating it)."
            )
        return out

    def fit_kwargs(self) -> dict:
        """Keyword arguments of :func:`scnapse.train.fit` for these options."""
        return {"progress": self.progress, "callback": self.callback, "cancel": self.cancel,
                "precision": self.precision, "checkpoint": self.checkpoint(), "distributed": self.distributed}

    def checkpoint(self):
        """The :class:`~scnapse.train.Checkpoint` these options ask for, or ``None``."""
        from .checkpoint import Checkpoint

        if self.checkpoint_dir is None:
            return None
        return Checkpoint(self.checkpoint_dir, every=self.checkpoint_every, resume=self.resume)

    def to_dict(self) -> dict:
        """The options that belong in a run's provenance (not the callback or cancel objects);
        ``threads`` resolved as :meth:`n_threads` resolves it (give the count a run used)."""
        return {"precision": self.precision or "fp32", "checkpoint_every": self.checkpoint_every,
                "resume": self.resume, "chunk_size": self.chunk_size, "threads": self.n_threads()}

    def n_threads(self, workload: str | None = None) -> int:
        """The number of CPU threads these options train with; ``workload`` is the kind of
        training (``"recurrent"`` or ``None``), which ``"auto"`` may give fewer threads
        (:data:`scnapse._settings.AUTO_THREAD_CAP`)."""
        from .._settings import resolve_threads

        return resolve_threads(self.threads, workload)


#: the keyword names every public training step accepts for :class:`RunOptions`
RUN_OPTIONS: tuple[str, ...] = RunOptions.field_names()
