"""Re-running a recorded session (or a pipeline file) from one of its steps, as ``scnapse run`` would.

No GUI here: the napari Pipeline panel calls :func:`rerun_from` in a worker thread. The steps run
through the same registry, parameter resolution (the pipeline's seed and device) and runner as
``scnapse run``, so a session edited in the panel and saved re-runs to the same numbers.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .registry import PipelineError, get_step
from .runner import _run_step
from .schema import Pipeline
from .session import Session


class Cancelled(Exception):  # noqa: N818 - a state, not an error
    """The re-run was cancelled; nothing was replaced."""


@dataclass
class Snapshots:
    """The data after each step of the last run (to re-run from a later step without replaying),
    valid while the steps before stay as they were."""

    steps: list = field(default_factory=list)  # the step dicts the snapshots were made with
    after: dict = field(default_factory=dict)  # step index → AnnData after it
    models: dict = field(default_factory=dict)  # step index → models trained up to it

    def base(self, steps: list[dict], start: int):
        """``(adata, models)`` after step ``start - 1`` if still valid, else ``None``."""
        if start == 0 or (start - 1) not in self.after or self.steps[:start] != steps[:start]:
            return None
        return self.after[start - 1].copy(), dict(self.models[start - 1])


def session_pipeline(session: Session) -> Pipeline:
    """The session as a validated pipeline (models it trained saved to a scratch folder)."""
    model_dir = getattr(session, "_model_dir", None)
    if model_dir is None and session.models:
        model_dir = tempfile.mkdtemp(prefix="scnapse-models-")
        session._model_dir = model_dir
    return session.to_pipeline(model_dir=model_dir)


def check(session: Session) -> Pipeline:
    """Validate before anything runs: a :class:`PipelineError` names the step and the problem."""
    if not session.steps:
        raise PipelineError("There are no steps to run: run a step in a panel or open a pipeline file.")
    if session.input is None and session.initial is None:
        raise PipelineError("These cells were not read from a file or a bundled dataset, so the steps cannot be "
                            "re-run from their input.")
    return session_pipeline(session)


def load_start(session: Session, pipe: Pipeline):
    """The data the session's first step ran on (its input, read again)."""
    if session.initial is not None and session.input is None:
        return session.initial.copy()
    adata, _ = pipe.load_input()
    return adata


def rerun_from(session: Session, start: int = 0, *, snapshots: Snapshots | None = None,
               on_step: Callable | None = None, callback: Callable | None = None,
               cancel: threading.Event | None = None):
    """Run the session's steps ``start``… on the data the steps before ``start`` give.

    Parameters
    ----------
    session
        The recorded steps, their input and seed.
    start
        Index of the first step to re-run; the earlier ones come from ``snapshots`` when they are
        still valid, else they are replayed from the input (each reported as ``"replayed"``).
    snapshots
        Kept between runs: filled with the data after each step.
    on_step
        ``on_step(index, state, seconds, message)`` with state ``"running"``, ``"replayed"``,
        ``"ran"``, ``"failed"`` or ``"cancelled"``.
    callback
        Gets each epoch's report of training steps.
    cancel
        Set it to stop: the training step running stops and no later step starts.

    Returns
    -------
    AnnData
        The result (the session's own data is not touched). Raises :class:`Cancelled` when
        cancelled, a :class:`PipelineError` (naming the step) when the steps do not validate, and
        the step's own error when one fails (after reporting it as ``"failed"``).
    """
    pipe = check(session)
    start = max(0, min(int(start), len(session.steps) - 1))
    notify = on_step or (lambda *a: None)
    cancel = cancel or threading.Event()
    snapshots = snapshots if snapshots is not None else Snapshots()
    base = snapshots.base(session.steps, start)
    if base is None:
        adata, models, first = load_start(session, pipe), {}, 0
    else:
        (adata, models), first = base, start
    snapshots.steps = [dict(s) for s in session.steps]
    snapshots.after = {k: v for k, v in snapshots.after.items() if k < first}
    snapshots.models = {k: v for k, v in snapshots.models.items() if k < first}
    for i in range(first, len(pipe.steps)):
        if cancel.is_set():
            notify(i, "cancelled", 0.0, "cancelled before it started")
            raise Cancelled(f"cancelled before step {i + 1}")
        step = pipe.steps[i]
        spec = get_step(step.name)
        params = pipe.resolved_params(step, spec)
        if spec.trains:
            params = {**params, "cancel": cancel, **({"callback": callback} if callback else {})}
        notify(i, "running", 0.0, "")
        t0 = time.perf_counter()
        try:
            _run_step(spec, step.id, adata, params, models, save=False)
        except Exception as err:
            notify(i, "failed", time.perf_counter() - t0, str(err))
            raise
        seconds = time.perf_counter() - t0
        if cancel.is_set():
            notify(i, "cancelled", seconds, "cancelled while running")
            raise Cancelled(f"cancelled in step {i + 1} ({step.id})")
        notify(i, "ran" if i >= start else "replayed", seconds, "")
        snapshots.after[i] = adata.copy()
        snapshots.models[i] = dict(models)
    return adata


def session_from_pipeline(pipe: Pipeline) -> Session:
    """A session holding a pipeline file's steps (their state "not run"), to show and run in the panel."""
    session = Session(input=pipe.input, seed=pipe.seed)
    for s in pipe.steps:
        session.steps.append({"step": s.name, "id": s.id, "params": dict(s.params)})
        session.status[s.id] = {"state": "not run"}
    session.source = pipe.source
    return session


__all__ = ["Cancelled", "PipelineError", "Snapshots", "check", "rerun_from", "session_from_pipeline"]
