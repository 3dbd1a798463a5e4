"""What was run on one AnnData interactively (the napari panels), recorded as a pipeline.

No GUI here: the panels record into a :class:`Session`, and "Save pipeline…" turns it into a
validated :class:`~scnapse.pipeline.Pipeline` (and a script).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anndata import AnnData

    from .schema import Pipeline


def _takes_run_options(name: str) -> bool:
    """Whether the registered step ``name`` trains (takes the run options, ``threads`` among them)."""
    from .registry import PipelineError, get_step

    try:
        return bool(get_step(name).run_options)
    except PipelineError:  # not a registered step: nothing to add
        return False


def _thread_workload(name: str) -> str | None:
    """The kind of training of the registered step ``name``, for its default thread count."""
    from .registry import PipelineError, get_step

    try:
        return getattr(get_step(name).func, "thread_workload", None)
    except PipelineError:
        return None


#: what a step writes when it is not given ``key_added`` (obsm / obs / graph keys)
_DEFAULT_WRITES = {
    "scnapse.tl.autoencoder": "X_autoencoder", "scnapse.tl.map_query": "X_autoencoder",
    "scnapse.tl.sequence_embedding": "X_sequence", "scnapse.tl.image_embedding": "X_image",
    "scnapse.tl.annotate": "predicted", "scanpy.pp.pca": "X_pca", "scanpy.tl.pca": "X_pca",
    "scanpy.pp.neighbors": "neighbors", "scanpy.tl.umap": "X_umap", "scanpy.tl.tsne": "X_tsne",
    "scanpy.tl.leiden": "leiden", "scanpy.tl.louvain": "louvain", "scanpy.tl.diffmap": "X_diffmap",
}
#: steps that read the neighbour graph (``neighbors_key``, default "neighbors")
_GRAPH_READERS = ("scanpy.tl.umap", "scanpy.tl.leiden", "scanpy.tl.louvain", "scanpy.tl.paga",
                  "scanpy.tl.draw_graph", "scanpy.tl.diffmap")
#: parameters that name something an earlier step may have written
_READ_PARAMS = ("use_rep", "model", "labels_key", "batch_key", "groupby", "keys", "key", "basis", "color",
                "embedding_key", "rep", "obsm_key")


def _names(value) -> set:
    if isinstance(value, ModelRef):
        return {value.name}
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple)):
        return set().union(*(_names(v) for v in value)) if value else set()
    return set()


def step_writes(step: dict) -> set:
    """The keys a recorded step writes (its obsm / obs / graph key, its id when it returns a model)."""
    name, params = step["step"], step.get("params", {})
    out = {step["id"]}
    key = params.get("key_added")
    if isinstance(key, str) and key:
        out.add(key)
    elif name in _DEFAULT_WRITES:
        out.add(_DEFAULT_WRITES[name])
    if name.endswith(("umap", "tsne")) and isinstance(key, str) and key:
        out.add(f"X_{key}")
    return out


def step_reads(step: dict) -> set:
    """The keys a recorded step reads that an earlier step may have written."""
    name, params = step["step"], step.get("params", {})
    out = set()
    for p in _READ_PARAMS:
        out |= _names(params.get(p))
    if name in _GRAPH_READERS:
        out.add(params.get("neighbors_key") or "neighbors")
    return out


def dependency(earlier: dict, later: dict) -> str | None:
    """Why ``later`` must run after ``earlier`` (it reads what ``earlier`` writes), or ``None``."""
    needed = sorted(step_reads(later) & step_writes(earlier))
    if not needed:
        return None
    return (f"step {later['id']!r} ({later['step']}) needs {needed[0]!r}, which step {earlier['id']!r} "
            f"({earlier['step']}) writes")


@dataclass(frozen=True)
class ModelRef:
    """A parameter that is a model trained in the session (saved beside the pipeline on export)."""

    name: str


@dataclass
class Session:
    """What was run on one AnnData, in order: becomes a pipeline file.

    ``input`` is what a pipeline reads to get the same starting data: ``{"dataset": name}`` for
    the bundled data, a file path for an opened ``.h5ad``, or ``None`` for data made in memory.
    """

    input: str | dict | None = None
    steps: list[dict] = field(default_factory=list)
    seed: int = 0
    models: dict = field(default_factory=dict)
    initial: AnnData | None = None  # in-memory input (e.g. cells made from an image), written on export
    #: step id → ``{"state": "ran" | "changed since" | "failed" | "cancelled" | "not run", "seconds", "message"}``
    status: dict = field(default_factory=dict)
    _undo: list = field(default_factory=list, repr=False)

    def add_model(self, name: str, model: Any) -> str:
        """Keep a model trained in the session; returns its (unique) name."""
        unique, k = name, 1
        while unique in self.models:
            k += 1
            unique = f"{name}_{k}"
        self.models[unique] = model
        return unique

    def record(self, name: str, params: dict, step_id: str | None = None) -> None:
        """Append the step ``name`` (a registered public name) run with ``params``; its id is
        ``step_id`` (default: the function's name), made unique."""
        ids = [s["id"] for s in self.steps]
        base = step_id or name.rsplit(".", 1)[-1]
        sid, k = base, 1
        while sid in ids:
            k += 1
            sid = f"{base}_{k}"
        params = dict(params)
        if "threads" not in params and _takes_run_options(name):
            from .._settings import resolve_threads

            # the count the step used, so the CLI re-run uses the same: same numbers
            params["threads"] = resolve_threads(None, _thread_workload(name))
        self.steps.append({"step": name, "id": sid, "params": params})
        self.status[sid] = {"state": "ran"}

    # -- editing (the Pipeline panel) -------------------------------------------------------------
    def index(self, step: int | str) -> int:
        """The position of a step given by position or id."""
        if isinstance(step, int) and not isinstance(step, bool):
            if not 0 <= step < len(self.steps):
                raise IndexError(f"step {step} out of range: the session has {len(self.steps)} steps.")
            return step
        ids = [s["id"] for s in self.steps]
        if step not in ids:
            raise KeyError(f"No step with id {step!r}; ids: {ids}.")
        return ids.index(step)

    def _remember(self) -> None:
        import copy

        self._undo.append((copy.deepcopy(self.steps), copy.deepcopy(self.status)))

    def set_params(self, step: int | str, params: dict) -> None:
        """Replace one step's parameters; it and every later step are then "changed since"."""
        i = self.index(step)
        self._remember()
        self.steps[i] = {**self.steps[i], "params": dict(params)}
        self._mark_changed(i)

    def drop(self, step: int | str) -> dict:
        """Remove a step (later steps are then "changed since"); returns it."""
        i = self.index(step)
        self._remember()
        removed = self.steps.pop(i)
        self.status.pop(removed["id"], None)
        self._mark_changed(i)
        return removed

    def move(self, step: int | str, to: int) -> None:
        """Move a step to position ``to`` (the steps from the earlier of the two are "changed since").

        Refused (``ValueError``, naming both steps) when a step would then run before one whose output
        it needs (e.g. UMAP before the neighbour graph it reads).
        """
        i = self.index(step)
        if not 0 <= to < len(self.steps):
            raise IndexError(f"position {to} out of range: the session has {len(self.steps)} steps.")
        moved = self.steps[i]
        crossed = self.steps[to:i] if to < i else self.steps[i + 1:to + 1]
        for other in crossed:
            reason = dependency(other, moved) if to < i else dependency(moved, other)
            if reason:
                raise ValueError(f"Cannot move step {moved['id']!r} {'up' if to < i else 'down'}: {reason}.")
        self._remember()
        self.steps.insert(to, self.steps.pop(i))
        self._mark_changed(min(i, to))

    def undo(self) -> bool:
        """Take back the last edit (parameters, drop, move); ``False`` when there is none."""
        if not self._undo:
            return False
        self.steps, self.status = self._undo.pop()
        return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def _mark_changed(self, start: int) -> None:
        for s in self.steps[start:]:
            if self.status.get(s["id"], {}).get("state") != "not run":
                self.status[s["id"]] = {**self.status.get(s["id"], {}), "state": "changed since"}

    def to_pipeline(self, *, output: str | None = None, name: str = "napari session", model_dir=None) -> Pipeline:
        """The session as a validated :class:`scnapse.pipeline.Pipeline`.

        Models trained in the session are saved under ``model_dir/<name>`` and referred to by path.
        """
        from .schema import Pipeline

        if not self.steps:
            raise ValueError("Nothing was run on these cells yet: run a step, then save the pipeline.")
        steps = [{**s, "params": {k: self._saved(v, model_dir) for k, v in s["params"].items()}}
                 for s in self.steps]
        return Pipeline.from_dict({
            "name": name, "input": self.input, "output": output, "seed": self.seed, "steps": steps,
        })

    def _saved(self, value, model_dir):
        """A :class:`ModelRef` becomes the folder its model is saved to; other values stay."""
        if not isinstance(value, ModelRef):
            return value
        if model_dir is None:
            raise ValueError("This session trained a model: give model_dir= to save it beside the pipeline.")
        folder = Path(model_dir) / value.name
        self.models[value.name].save(folder)
        return str(folder.resolve())
