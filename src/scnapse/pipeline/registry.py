"""The steps a pipeline file (and a napari panel) may run, registered where they are defined.

A scnapse step registers itself with a decorator above its definition::

    from ..pipeline.registry import step

    @step("scnapse.tl.train_classifier", trains=True, returns_model=True)
    def train_classifier(adata, *, labels_key, ...): ...

The flags say how pipelines, panels and :func:`scnapse.tl.tune` treat the step:

- ``trains``: it trains a network, so it accepts every :class:`~scnapse.train.TrainConfig` field,
  gets the pipeline's seed and device, reports each epoch to ``callback=`` and can be tuned;
- ``returns_model``: it returns a trained model instead of writing into the AnnData (a pipeline
  keeps it under the step's id, and ``save_model: PATH`` saves it);
- ``takes_model``: its ``model`` parameter is a model (in a pipeline: the id of an earlier
  ``returns_model`` step, or the folder of a saved model);
- ``metrics``: the scores :func:`scnapse.tl.tune` can optimise for it, in order of preference
  (the first one whose needs are met is the default); every training step can be scored on
  ``"val_loss"``.

scanpy's steps are allowed by name (:data:`SCANPY_STEPS`). Importing this module imports neither
torch nor scanpy: a scnapse step's module is imported the first time a step is looked up.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

#: scanpy functions a pipeline may call, as ``scanpy.<name>``
SCANPY_STEPS: tuple[str, ...] = (
    "pp.filter_cells", "pp.filter_genes", "pp.normalize_total", "pp.log1p", "pp.highly_variable_genes",
    "pp.scale", "pp.pca", "pp.neighbors", "pp.regress_out", "pp.subsample", "tl.pca", "tl.umap", "tl.tsne",
    "tl.leiden", "tl.diffmap", "tl.rank_genes_groups", "tl.paga", "tl.dendrogram",
)
#: the scnapse modules whose definitions register steps (imported on the first look-up)
STEP_MODULES: tuple[str, ...] = ("scnapse.tl", "scnapse.pl", "scnapse.im")
#: the scores of an embedding step: label-based ones first (used when labels are given)
EMBEDDING_METRICS: tuple[str, ...] = ("knn_accuracy", "leiden_ari", "val_loss")


class PipelineError(ValueError):
    """A pipeline file that cannot run as written; the message says where and why."""


@dataclass(frozen=True)
class StepSpec:
    """A registered step: its public name, the function, and how pipelines treat it."""

    name: str
    func: Callable
    trains: bool = False
    seed_param: str | None = None  # "seed" or "random_state": gets the pipeline's seed
    returns_model: bool = False
    takes_model: bool = False
    metrics: tuple[str, ...] = ()
    run_options: bool = False  # takes run=RunOptions(...), so each of its fields as a keyword too

    @property
    def train_options(self) -> bool:
        """Whether the step accepts :class:`~scnapse.train.TrainConfig` fields (it trains)."""
        return self.trains


@dataclass(frozen=True)
class _Entry:
    """What was registered: a function (decorator) or a dotted target found at look-up."""

    func: Callable | None = None
    target: str | None = None
    trains: bool | None = None
    returns_model: bool = False
    takes_model: bool = False
    metrics: tuple[str, ...] = ()


_ENTRIES: dict[str, _Entry] = {f"scanpy.{n}": _Entry(target=n) for n in SCANPY_STEPS}
_NAMES: dict[Callable, str] = {}  # function → public name
_loaded = False


def step(name: str, *, trains: bool = False, returns_model: bool = False, takes_model: bool = False,
         metrics: tuple[str, ...] | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as the pipeline step ``name``; the function is returned
    unchanged. See the module's docstring for the flags. ``metrics`` defaults to
    ``("val_loss",)`` for a training step, so that every training step can be tuned."""
    if not name.startswith("scnapse.") or name.count(".") < 2:
        raise ValueError(f"step name {name!r}: write the public name, e.g. 'scnapse.tl.autoencoder'.")
    if metrics is None:
        metrics = ("val_loss",) if trains else ()

    def register(func: Callable) -> Callable:
        _ENTRIES[name] = _Entry(func=func, trains=trains, returns_model=returns_model, takes_model=takes_model,
                                metrics=tuple(metrics))
        _NAMES[func] = name
        return func

    return register


def register_step(public_name: str, target: str | Callable, *, trains: bool | None = None,
                  returns_model: bool = False, takes_model: bool = False) -> None:
    """Allow ``public_name`` in pipeline files. ``target`` is the function, or ``"tl.name"`` etc.
    inside scnapse (inside scanpy for names starting with ``scanpy.``), found when first used.
    ``trains=None``: a scnapse function with ``**kwargs`` trains (takes ``TrainConfig`` fields)."""
    if callable(target):
        _ENTRIES[public_name] = _Entry(func=target, trains=trains, returns_model=returns_model,
                                       takes_model=takes_model)
        _NAMES[target] = public_name
    else:
        _ENTRIES[public_name] = _Entry(target=str(target), trains=trains, returns_model=returns_model,
                                       takes_model=takes_model)


def load_steps() -> None:
    """Import the modules that register scnapse's steps (once; this imports torch)."""
    global _loaded
    if not _loaded:
        for module in STEP_MODULES:
            importlib.import_module(module)
        _loaded = True


def step_names() -> list[str]:
    """Every registered public name, sorted."""
    load_steps()
    return sorted(_ENTRIES)


def public_name(func: Callable) -> str:
    """The public name a step function is registered under (``sn.tl.autoencoder`` →
    ``"scnapse.tl.autoencoder"``); a :class:`PipelineError` for a function that is not a step."""
    for f in (func, getattr(func, "__wrapped__", None)):
        if f is not None and f in _NAMES and _ENTRIES[_NAMES[f]].func is f:
            return _NAMES[f]
    load_steps()
    for name, entry in _ENTRIES.items():
        if entry.func is None and entry.target is not None and _resolve(name, entry.target) is func:
            return name
    raise PipelineError(f"{getattr(func, '__qualname__', func)!r} is not a registered step; "
                        f"registered steps: {step_names()}.")


def get_step(name: str | Callable) -> StepSpec:
    """The :class:`StepSpec` of a public name (or of a registered step function)."""
    if callable(name):
        name = public_name(name)
    if name not in _ENTRIES and str(name).startswith("scnapse."):
        load_steps()
    if name not in _ENTRIES:
        import difflib

        names = step_names()
        # a near miss of the whole name, or of its last part ('autoencodr', 'normalise_total')
        close = difflib.get_close_matches(str(name), names, n=2, cutoff=0.75)
        if not close:
            tails = {n.rsplit(".", 1)[-1]: n for n in names}
            close = [tails[t] for t in difflib.get_close_matches(str(name).rsplit(".", 1)[-1], list(tails), n=2)]
        if close:
            raise PipelineError(f"Unknown step {name!r}. Did you mean {' or '.join(repr(c) for c in close)}?")
        raise PipelineError(f"Unknown step {name!r}. Registered steps: {names}.")
    entry = _ENTRIES[name]
    func = entry.func if entry.func is not None else _resolve(name, entry.target)
    params = inspect.signature(func).parameters
    scnapse_kwargs = name.startswith("scnapse.") and any(p.kind is p.VAR_KEYWORD for p in params.values())
    trains = scnapse_kwargs if entry.trains is None else entry.trains
    seed_param = next((p for p in ("seed", "random_state") if p in params), "seed" if trains else None)
    return StepSpec(name, func, trains=trains, seed_param=seed_param, returns_model=entry.returns_model,
                    takes_model=entry.takes_model, metrics=entry.metrics or (("val_loss",) if trains else ()),
                    run_options="run" in params)


def _resolve(name: str, target: str) -> Callable:
    module = importlib.import_module("scanpy" if name.startswith("scanpy.") else "scnapse")
    func = module
    for part in target.split("."):
        func = getattr(func, part)
    return func


def steps_where(**flags: bool) -> list[str]:
    """scnapse's registered names whose flags match, e.g. ``steps_where(trains=True)`` (scanpy's
    steps neither train nor pass models)."""
    return [n for n in step_names()
            if n.startswith("scnapse.") and all(getattr(get_step(n), k) == v for k, v in flags.items())]
