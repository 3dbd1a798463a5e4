"""The pipeline file's format and its checks: everything is validated before anything runs."""

from __future__ import annotations

import copy
import inspect
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .registry import PipelineError, StepSpec, get_step

FORMAT_VERSION = 1
_TOP_KEYS = ("name", "input", "output", "seed", "device", "deterministic", "steps", "format_version")
_SETTABLE = ("seed", "output", "device", "input", "name", "deterministic")


@dataclass
class Step:
    """One step of a pipeline: a registered public name, its parameters and a unique id."""

    name: str
    params: dict = field(default_factory=dict)
    id: str = ""

    def to_dict(self) -> dict:
        return {"step": self.name, "id": self.id, "params": copy.deepcopy(self.params)}


@dataclass
class Pipeline:
    """A validated pipeline: load with :meth:`from_yaml` / :meth:`from_dict`, then :meth:`run`."""

    steps: list[Step]
    input: str | dict | None = None
    output: str | None = None
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    name: str = "pipeline"
    source: str | None = None  # the file it came from

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Pipeline:
        """Read and validate a pipeline file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Pipeline file {str(path)!r} does not exist.")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise PipelineError(f"{path} is not valid YAML: {err}") from None
        pipe = cls.from_dict(data, where=str(path))
        pipe.source = str(path)
        return pipe

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "pipeline") -> Pipeline:
        """Validate a pipeline given as a mapping (the parsed YAML)."""
        if not isinstance(data, dict):
            raise PipelineError(f"{where}: a pipeline is a mapping with 'input', 'steps' and 'output'.")
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise PipelineError(f"{where}: unknown top-level key(s) {unknown}; valid keys: {sorted(_TOP_KEYS)}.")
        if int(data.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise PipelineError(f"{where}: format_version {data['format_version']} is newer than this scnapse reads.")
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise PipelineError(f"{where}: 'steps' must be a non-empty list.")
        seen: dict[str, int] = {}
        steps = [_parse_step(item, i, where, seen) for i, item in enumerate(raw_steps)]
        seed = data.get("seed", 0)
        problems = []
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            problems.append(f"seed={seed!r} must be a non-negative integer.")
        pipe = cls(steps=steps, input=data.get("input"), output=data.get("output"), seed=seed,
                   device=str(data.get("device", "auto")), deterministic=bool(data.get("deterministic", False)),
                   name=str(data.get("name", "pipeline")))
        raise_problems(where, problems + pipe.problems())
        return pipe

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "input": self.input, "output": self.output,
                "seed": self.seed, "device": self.device, "deterministic": self.deterministic,
                "steps": [s.to_dict() for s in self.steps]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- checking ----------------------------------------------------------------------------------
    def validate(self, *, where: str = "pipeline") -> None:
        """Check every step's name and parameters, and that every model a step uses exists; every
        problem found is reported at once (one :class:`PipelineError`, one line per problem)."""
        raise_problems(where, self.problems())

    def problems(self) -> list[str]:
        """Every problem of the steps.

        Returns
        -------
        list of str
            One line per problem (``"step 3 (id): what is wrong"``); empty when the pipeline can run.
        """
        problems: list[str] = []
        model_ids = []
        for i, step in enumerate(self.steps):
            here = f"step {i + 1} ({step.id})"
            try:
                spec = get_step(step.name)
            except PipelineError as err:
                problems.append(f"{here}: {err}")
                continue
            problems += [f"{here}: {p}" for p in _param_problems(spec, step)]
            if spec.takes_model:
                ref = step.params.get("model")
                if not isinstance(ref, str) or not (ref in model_ids or "/" in ref or Path(ref).exists()):
                    problems.append(f"{here}: model={ref!r} must name an earlier training step "
                                    f"(ids: {model_ids}) or the folder of a saved model.")
            if spec.returns_model:
                model_ids.append(step.id)
        return problems

    def set(self, assignment: str) -> None:
        """Apply ``steps.<id>.<param>=<value>`` (or ``seed=``, ``output=``, ``device=``); the value is YAML."""
        if "=" not in assignment:
            raise PipelineError(f"--set {assignment!r}: write KEY=VALUE, e.g. steps.autoencoder.lr=3e-4.")
        key, raw = assignment.split("=", 1)
        value = yaml.safe_load(raw)
        parts = key.strip().split(".")
        if parts[0] == "steps" and len(parts) == 3:
            ids = [s.id for s in self.steps]
            if parts[1] not in ids:
                raise PipelineError(f"--set {key}: no step with id {parts[1]!r}; step ids: {ids}.")
            self.steps[ids.index(parts[1])].params[parts[2]] = _coerce_number(value)
        elif len(parts) == 1 and parts[0] in _SETTABLE:
            setattr(self, parts[0], value)
        else:
            raise PipelineError(f"--set {key}: use steps.<id>.<parameter>, or one of {', '.join(_SETTABLE)}.")
        self.validate(where="after --set")

    # -- running -----------------------------------------------------------------------------------
    def resolved_params(self, step: Step, spec: StepSpec | None = None) -> dict:
        """The step's parameters with the pipeline's seed, device and determinism filled in."""
        spec = spec or get_step(step.name)
        params = dict(step.params)
        if spec.seed_param and spec.seed_param not in params:
            params[spec.seed_param] = self.seed
        if spec.trains:
            params.setdefault("device", self.device)
            if self.deterministic:
                params.setdefault("deterministic", True)
            params.setdefault("progress", False)
        return params

    def load_input(self):
        """``(adata, path)`` of the pipeline's input (see :func:`scnapse.pipeline.load_input`)."""
        from .readers import load_input

        return load_input(self.input)

    def writes(self, output: str | os.PathLike | None = None) -> list[tuple[str, str]]:
        """Every ``(what, path)`` a run will write: ``crops``, ``plot``, ``model``,
        ``checkpoints``, ``output`` (see :func:`scnapse.pipeline.safety.planned_writes`)."""
        from .safety import planned_writes

        return planned_writes(self, output)

    def run(self, adata=None, *, output: str | os.PathLike | None = None, write: bool = True,
            overwrite: bool = False, confine: bool | str | os.PathLike = False):
        """Run every step on ``adata`` (or the pipeline's input) and write the output atomically.

        Before anything runs, every path the run will write is checked: an existing output that
        is not an ``.h5ad`` written by scnapse, or a ``save_model`` folder that holds something
        other than a scnapse model, is refused unless ``overwrite=True``; with ``confine=True``
        (or a folder) every write must lie in the pipeline file's folder (or that folder).

        Returns the resulting AnnData, with the provenance in ``uns['scnapse']``; the models the
        steps trained are in ``self.models`` (by step id).
        """
        from .runner import run_pipeline

        return run_pipeline(self, adata, output=output, write=write, overwrite=overwrite, confine=confine)


def _coerce_number(value):
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _parse_step(item, i: int, where: str, seen: dict) -> Step:
    """A step written as ``name``, ``{name: {params}}`` or ``{step: name, id: .., params: {..}}``."""
    if isinstance(item, str):
        name, params, sid = item, {}, None
    elif isinstance(item, dict) and "step" in item:
        extra = sorted(set(item) - {"step", "params", "id"})
        if extra:
            raise PipelineError(f"{where}: step {i + 1}: unknown key(s) {extra}; a step has 'step', 'id', 'params'.")
        name, params, sid = item["step"], item.get("params") or {}, item.get("id")
    elif isinstance(item, dict) and len(item) == 1:
        name, params = next(iter(item.items()))
        params, sid = params or {}, None
    else:
        raise PipelineError(
            f"{where}: step {i + 1} must be a step name, {{name: {{params}}}}, or {{step: name, params: {{...}}}}."
        )
    if not isinstance(params, dict):
        raise PipelineError(f"{where}: step {i + 1} ({name}): parameters must be a mapping, not {params!r}.")
    params = {k: _coerce_number(v) for k, v in params.items()}
    if sid is None:
        base = str(name).rsplit(".", 1)[-1]
        seen[base] = seen.get(base, 0) + 1
        sid = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return Step(name=str(name), params=params, id=str(sid))


_SIMPLE = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
#: parameters that take a Python object (or make no sense in a file): refused in a pipeline, and not
#: listed among its valid parameters
PYTHON_ONLY = ("copy", "inplace", "ax", "run", "callback", "cancel")
#: names people write for a parameter that has another name here
_ALIASES = {"learning_rate": "lr", "epochs": "max_epochs", "n_epochs": "max_epochs", "patience": "early_stopping",
            "loss": "cost", "latent_dim": "n_latent", "n_components": "n_latent", "hidden_layers": "hidden",
            "weight_decay_l2": "l2"}


def raise_problems(where: str, problems: list[str]) -> None:
    """Raise one :class:`PipelineError` naming every problem; return when there is none.

    Parameters
    ----------
    where
        Where the problems are (the pipeline file's path), the message's first words.
    problems
        One line per problem; one problem gives a one-line message, several a numbered list.

    Returns
    -------
    None
        Only when ``problems`` is empty.
    """
    if len(problems) == 1:
        raise PipelineError(f"{where}: {problems[0]}")
    if problems:
        raise PipelineError(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def did_you_mean(name: str, names) -> str:
    """A suggestion for a mistyped name.

    Parameters
    ----------
    name
        The name as written.
    names
        The valid names.

    Returns
    -------
    str
        `` Did you mean 'x'?`` for the closest of ``names`` (or the usual other name, ``lr`` for
        ``learning_rate``), else ``""``.
    """
    import difflib

    names = list(names)
    close = [_ALIASES[name]] if _ALIASES.get(name) in names else difflib.get_close_matches(str(name), names, n=2)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def step_options(spec: StepSpec) -> tuple[list[str], list[str], list[str]]:
    """What a pipeline file may set on a step.

    Parameters
    ----------
    spec
        The registered step (:func:`~scnapse.pipeline.get_step`).

    Returns
    -------
    tuple of three lists
        Its own parameters, the training options (:class:`~scnapse.train.TrainConfig` fields) and
        the run options (:class:`~scnapse.train.RunOptions` fields), each sorted; Python-only
        parameters (:data:`PYTHON_ONLY`) left out.
    """
    sig = inspect.signature(spec.func)
    own = {n for n, p in sig.parameters.items()
           if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in ("adata", "data")}
    train: set[str] = set()
    if spec.trains:
        from ..train.config import TrainConfig

        train = set(TrainConfig.field_names()) - own
    if spec.returns_model:
        own.add("save_model")
    run: set[str] = set()
    if spec.run_options:
        from ..train.run import RUN_OPTIONS

        run = set(RUN_OPTIONS) - own - train
    drop = set(PYTHON_ONLY)
    return sorted(own - drop), sorted(train - drop), sorted(run - drop)


def _param_problems(spec: StepSpec, step: Step) -> list[str]:
    """Unknown parameters, invalid training options and values of the wrong simple type."""
    own, train_fields, run = step_options(spec)
    valid = set(own) | set(train_fields) | set(run)
    problems = []
    for key in step.params:
        if key in PYTHON_ONLY:
            problems.append(f"{key!r} cannot be set in a pipeline (steps work in place and take no Python "
                            "objects).")
        elif key not in valid:
            listed = f"{spec.name}'s own parameters: {own}"
            if train_fields:
                listed += (" and the training options of every training step (see `TrainConfig`; e.g. lr, "
                           "max_epochs, early_stopping)")
                if run:
                    listed += " and run options (checkpoint_dir, threads, ...)"
            hint = did_you_mean(key, valid)
            problems.append(f"unknown parameter {key!r}." + (hint or f" Valid: {listed}."))
    if spec.trains:
        from ..train.config import TrainConfig

        train = {k: v for k, v in step.params.items() if k in train_fields}
        bad = []
        for key, value in train.items():  # one by one, so that every bad value is reported
            try:
                TrainConfig.from_kwargs(**{key: value})
            except (TypeError, ValueError) as err:
                bad.append(str(err))
        if not bad and train:
            try:
                TrainConfig.from_kwargs(**train)
            except (TypeError, ValueError) as err:
                bad.append(str(err))
        problems += bad
    return problems + _type_problems(spec.func, step.params)


def _type_problems(func, params: dict) -> list[str]:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # scanpy's annotations may need optional packages
        hints = {}
    problems = []
    for key, value in params.items():
        hint = hints.get(key)
        args = typing.get_args(hint)
        if args and type(None) in args and len(args) == 2:  # ``X | None``: None, or an X
            hint = next(a for a in args if a is not type(None))
        if typing.get_origin(hint) is typing.Literal and value is not None:
            if value not in typing.get_args(hint):
                choices = ", ".join(map(repr, typing.get_args(hint)))
                problems.append(f"parameter {key}={value!r} must be one of {choices}.")
        elif hint in _SIMPLE and value is not None:
            ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                problems.append(f"parameter {key}={value!r} must be {_SIMPLE[hint]}.")
    return problems
