"""Pipeline files: an input, ordered named steps with parameters, a seed, an output.

A pipeline is YAML::

    name: pbmc-autoencoder
    input: {dataset: pbmc68k}          # or a path: .h5ad, .csv, a 10x .h5 or an mtx folder
    output: results/pbmc_autoencoder.h5ad
    seed: 0                            # given to every step that takes seed / random_state
    device: auto                       # given to every scnapse training step
    steps:
      - scanpy.pp.normalize_total: {target_sum: 10000}
      - scanpy.pp.log1p
      - step: scnapse.tl.autoencoder   # the long form, with an id for --set
        id: autoencoder
        params: {n_latent: 10}

Relative paths are relative to the working directory. Only the steps in :data:`STEPS` can run:
a pipeline file can never execute arbitrary code. Everything is checked before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ._settings import logger
from .train.config import TrainConfig
from .train.run import RunOptions

FORMAT_VERSION = 1


class PipelineError(ValueError):
    """A pipeline file that cannot run as written; the message says where and why."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    func: Callable
    train_options: bool = False  # accepts TrainConfig fields through **kwargs
    seed_param: str | None = None  # "seed" or "random_state"


def _scanpy_steps() -> dict[str, str]:
    return {
        f"scanpy.{n}": n
        for n in (
            "pp.filter_cells", "pp.filter_genes", "pp.normalize_total", "pp.log1p",
            "pp.highly_variable_genes", "pp.scale", "pp.pca", "pp.neighbors", "pp.regress_out",
            "pp.subsample", "tl.pca", "tl.umap", "tl.tsne", "tl.leiden", "tl.diffmap",
            "tl.rank_genes_groups", "tl.paga", "tl.dendrogram",
        )
    }


#: registered steps: public name → where to find it. Models of other families add theirs here.
_REGISTRY: dict[str, str] = {
    **_scanpy_steps(),
    "scnapse.tl.autoencoder": "tl.autoencoder",
    "scnapse.tl.compare_embeddings": "tl.compare_embeddings",
    "scnapse.tl.annotate": "tl.annotate",
    "scnapse.pl.confusion_matrix": "pl.confusion_matrix",
    "scnapse.pl.loss": "pl.loss",
    "scnapse.pl.embedding": "pl.embedding",
    "scnapse.tl.image_embedding": "tl.image_embedding",
    "scnapse.tl.sequence_embedding": "tl.sequence_embedding",
    "scnapse.tl.annotate_sequences": "tl.annotate_sequences",
    "scnapse.tl.forecast": "tl.forecast",
}


#: steps that return a trained model instead of writing into the AnnData. In a pipeline the model is
#: kept under the step's id (later steps name it: ``model: <id>``) and, with ``save_model: PATH``, saved.
MODEL_STEPS = {
    "scnapse.tl.train_classifier": "tl.train_classifier",
    "scnapse.tl.train_image_classifier": "tl.train_image_classifier",
    "scnapse.tl.train_sequence_classifier": "tl.train_sequence_classifier",
    "scnapse.tl.train_forecaster": "tl.train_forecaster",
}
_REGISTRY.update(MODEL_STEPS)
#: steps that take a model: ``model`` may be the id of an earlier model step or a saved model's folder
_MODEL_USERS = ("scnapse.tl.annotate", "scnapse.tl.annotate_images", "scnapse.tl.annotate_sequences",
                "scnapse.tl.forecast")
for _name in _MODEL_USERS:
    _REGISTRY.setdefault(_name, _name.split(".", 1)[1])


def register_step(public_name: str, target: str) -> None:
    """Allow ``public_name`` in pipeline files; ``target`` is ``"tl.name"`` etc. inside scnapse
    (or inside scanpy for names starting with ``scanpy.``)."""
    _REGISTRY[public_name] = target


def step_names() -> list[str]:
    return sorted(_REGISTRY)


def get_step(name: str) -> StepSpec:
    if name not in _REGISTRY:
        raise PipelineError(f"Unknown step {name!r}. Registered steps: {step_names()}.")
    target = _REGISTRY[name]
    if name.startswith("scanpy."):
        import scanpy as mod
    else:
        import scnapse as mod
    func = mod
    for part in target.split("."):
        func = getattr(func, part)
    sig = inspect.signature(func)
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    seed_param = next((p for p in ("seed", "random_state") if p in sig.parameters), None)
    if seed_param is None and has_var_kw and name.startswith("scnapse."):
        seed_param = "seed"
    return StepSpec(name, func, train_options=has_var_kw and name.startswith("scnapse."), seed_param=seed_param)


# -- the format -------------------------------------------------------------------------------
@dataclass
class Step:
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
        if not isinstance(data, dict):
            raise PipelineError(f"{where}: a pipeline is a mapping with 'input', 'steps' and 'output'.")
        known = {"name", "input", "output", "seed", "device", "deterministic", "steps", "format_version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineError(f"{where}: unknown top-level key(s) {unknown}; valid keys: {sorted(known)}.")
        if int(data.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise PipelineError(f"{where}: format_version {data['format_version']} is newer than this scnapse reads.")
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise PipelineError(f"{where}: 'steps' must be a non-empty list.")
        steps, seen = [], {}
        for i, item in enumerate(raw_steps):
            steps.append(_parse_step(item, i, where, seen))
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PipelineError(f"{where}: seed={seed!r} must be a non-negative integer.")
        pipe = cls(steps=steps, input=data.get("input"), output=data.get("output"), seed=seed,
                   device=str(data.get("device", "auto")), deterministic=bool(data.get("deterministic", False)),
                   name=str(data.get("name", "pipeline")))
        pipe.validate(where=where)
        return pipe

    def to_dict(self) -> dict:
        d = {"format_version": FORMAT_VERSION, "name": self.name, "input": self.input, "output": self.output,
             "seed": self.seed, "device": self.device, "deterministic": self.deterministic,
             "steps": [s.to_dict() for s in self.steps]}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- checking ----------------------------------------------------------------------------------
    def validate(self, *, where: str = "pipeline") -> None:
        model_ids = []
        for i, step in enumerate(self.steps):
            try:
                spec = get_step(step.name)
            except PipelineError as err:
                raise PipelineError(f"{where}: step {i + 1} ({step.id}): {err}") from None
            _check_params(spec, step, f"{where}: step {i + 1} ({step.id})")
            if step.name in _MODEL_USERS:
                ref = step.params.get("model")
                if not isinstance(ref, str) or not (ref in model_ids or "/" in ref or Path(ref).exists()):
                    raise PipelineError(
                        f"{where}: step {i + 1} ({step.id}): model={ref!r} must name an earlier training step "
                        f"(ids: {model_ids}) or the folder of a saved model."
                    )
            if step.name in MODEL_STEPS:
                model_ids.append(step.id)

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
        elif len(parts) == 1 and parts[0] in ("seed", "output", "device", "input", "name", "deterministic"):
            setattr(self, parts[0], value)
        else:
            raise PipelineError(
                f"--set {key}: use steps.<id>.<parameter>, or one of seed, output, device, input, name."
            )
        self.validate(where="after --set")

    # -- running -----------------------------------------------------------------------------------
    def load_input(self):
        return load_input(self.input)

    def run(self, adata=None, *, output: str | os.PathLike | None = None, write: bool = True):
        """Run every step on ``adata`` (or the pipeline's input) and write the output atomically.

        Returns the resulting AnnData, with the provenance in ``uns['scnapse']``.
        """
        from . import __version__
        from .train.repro import package_versions

        source_path = None
        if adata is None:
            if self.input is None:
                raise PipelineError("This pipeline has no 'input'; give one, or pass an AnnData to run().")
            adata, source_path = load_input(self.input)
        out_path = output or self.output
        if write and out_path and source_path and Path(out_path).resolve() == Path(source_path).resolve():
            raise PipelineError(
                f"The output {str(out_path)!r} is the input file; a run never overwrites its input. "
                "Choose another output."
            )
        checksum = file_checksum(source_path) if source_path else None
        from .train.distributed import is_main_process

        main = is_main_process()  # under torchrun only rank 0 writes files
        timings = []
        resolved = []
        self.models = {}
        for i, step in enumerate(self.steps):
            spec = get_step(step.name)
            params = self.resolved_params(step, spec)
            if not main and params.get("save"):
                params = {**params, "save": None}
            call = dict(params)
            save_model = call.pop("save_model", None)
            if step.name in _MODEL_USERS:
                ref = call.get("model")
                if ref in self.models:
                    call["model"] = self.models[ref]
                elif isinstance(ref, str):
                    from .models import load as load_model

                    call["model"] = load_model(ref)
            logger.info(f"[{i + 1}/{len(self.steps)}] {step.name}")
            t0 = time.perf_counter()
            result = spec.func(adata, **call)
            if step.name in MODEL_STEPS:
                self.models[step.id] = result
                if save_model and write and main:
                    result.save(save_model)
            timings.append(round(time.perf_counter() - t0, 4))
            resolved.append({"step": step.name, "id": step.id, "params": params})
        from ._anndata import sanitize_for_uns

        adata.uns["scnapse"] = sanitize_for_uns({
            "pipeline": self.to_yaml(),
            "resolved_steps": resolved,
            "seed": self.seed,
            "device": self.device,
            "versions": {**package_versions(), "scnapse": __version__},
            "input": str(source_path) if source_path else "in memory",
            "input_sha256": checksum,
            "step_seconds": timings,
        })
        if write and out_path and main:
            write_h5ad_atomic(adata, out_path)
            logger.info(f"wrote {out_path}")
        return adata

    def resolved_params(self, step: Step, spec: StepSpec | None = None) -> dict:
        spec = spec or get_step(step.name)
        params = dict(step.params)
        if spec.seed_param and spec.seed_param not in params:
            params[spec.seed_param] = self.seed
        if spec.train_options:
            params.setdefault("device", self.device)
            if self.deterministic:
                params.setdefault("deterministic", True)
            params.setdefault("progress", False)
        return params


def _coerce_number(value):
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _parse_step(item, i: int, where: str, seen: dict) -> Step:
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


def _check_params(spec: StepSpec, step: Step, where: str) -> None:
    sig = inspect.signature(spec.func)
    named = [n for n, p in sig.parameters.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in ("adata", "data", "copy")]
    valid = set(named) | (set(TrainConfig.field_names()) if spec.train_options else set())
    valid |= set(RunOptions.field_names()) if "run" in sig.parameters else set()
    if spec.name in MODEL_STEPS:
        valid.add("save_model")
    for key in step.params:
        if key not in valid:
            raise PipelineError(f"{where}: unknown parameter {key!r}; valid parameters: {sorted(valid)}.")
        if key in ("copy", "inplace"):
            raise PipelineError(f"{where}: {key!r} cannot be set in a pipeline (steps work in place).")
    train = {k: v for k, v in step.params.items() if spec.train_options and k in TrainConfig.field_names()
             and k not in named}
    if train:
        try:
            TrainConfig.from_kwargs(**train)
        except (TypeError, ValueError) as err:
            raise PipelineError(f"{where}: {err}") from None
    try:
        hints = typing.get_type_hints(spec.func)
    except Exception:  # scanpy's annotations may need optional packages
        hints = {}
    for key, value in step.params.items():
        hint = hints.get(key)
        if hint in _SIMPLE and value is not None:
            ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise PipelineError(f"{where}: parameter {key}={value!r} must be {_SIMPLE[hint]}.")


# -- input and output ---------------------------------------------------------------------------
def load_input(spec):
    """Read a pipeline's input: ``{dataset: name}`` (bundled), or a path to ``.h5ad``, ``.csv``
    (cells × genes), a 10x ``.h5`` file or a 10x mtx folder. Returns ``(adata, path)``."""
    import anndata as ad
    import scanpy as sc

    from . import datasets

    if isinstance(spec, dict) and "image" in spec:
        return _load_image_input(spec)
    if isinstance(spec, dict):
        if set(spec) != {"dataset"}:
            raise PipelineError(f"input {spec!r}: write {{dataset: NAME}}, {{image: PATH, labels: PATH}} or a file path.")
        name = spec["dataset"]
        loaders = {"pbmc68k": "pbmc68k_reduced_counts.h5ad", "pbmc160": "decoupler_pbmc160.h5ad"}
        if name not in loaders:
            raise PipelineError(f"input dataset {name!r} is not bundled; choose one of {sorted(loaders)}.")
        path = datasets.sample_path(loaders[name])
        return ad.read_h5ad(path), path
    path = Path(str(spec))
    if not path.exists():
        raise FileNotFoundError(f"The pipeline's input {str(path)!r} does not exist (relative paths start "
                                f"from the working directory, {os.getcwd()}).")
    if path.is_dir():
        return sc.read_10x_mtx(path), path
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return ad.read_h5ad(path), path
    if suffix == ".h5":
        return sc.read_10x_h5(path), path
    if suffix in (".csv", ".tsv", ".txt"):
        return sc.read_csv(path, delimiter="\t" if suffix != ".csv" else ","), path
    raise PipelineError(f"input {str(path)!r}: unsupported type {suffix!r}; use .h5ad, .csv, .tsv, a 10x .h5 or mtx folder.")


def _load_image_input(spec: dict):
    """``{image: img.tif, labels: labels.tif, size: 48, channel_axis: ..}`` → one row per object
    (``sn.im.cells_from_labels``); the other keys are its options."""
    import tifffile

    from .im import cells_from_labels

    if "labels" not in spec:
        raise PipelineError(f"input {spec!r}: an image input needs 'labels: PATH' (the segmentation) too.")
    paths = [Path(str(spec["image"])), Path(str(spec["labels"]))]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"The pipeline's input {str(p)!r} does not exist.")
    options = {k: v for k, v in spec.items() if k not in ("image", "labels")}
    try:
        cells = cells_from_labels(tifffile.imread(paths[0]), tifffile.imread(paths[1]), **options)
    except TypeError as err:
        raise PipelineError(f"input {spec!r}: {err}") from None
    return cells, paths[0]


def file_checksum(path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    for f in files:
        if f.is_file():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def write_h5ad_atomic(adata, path: str | os.PathLike) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the output the usual permissions
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_script(pipe: Pipeline) -> str:
    """The pipeline as a plain Python script: the same steps, with the same resolved parameters
    (seed and device included), so it computes the same result as ``scnapse run``."""
    lines = [
        f'"""{pipe.name}: exported from a scnapse pipeline by `scnapse export`."""',
        "import scanpy",
        "import scnapse",
        "from scnapse.pipeline import load_input, write_h5ad_atomic",
        "",
        f"adata, source = load_input({pipe.input!r})",
    ]
    models = set()
    for step in pipe.steps:
        params = pipe.resolved_params(step)
        save_model = params.pop("save_model", None)
        ref = params.pop("model", None) if step.name in _MODEL_USERS else None
        args = "".join(f", {k}={v!r}" for k, v in params.items())
        if ref is not None:
            model_arg = _var(ref) if ref in models else f"scnapse.models.load({ref!r})"
            lines.append(f"{step.name}(adata, {model_arg}{args})")
        elif step.name in MODEL_STEPS:
            models.add(step.id)
            lines.append(f"{_var(step.id)} = {step.name}(adata{args})")
            if save_model:
                lines.append(f"{_var(step.id)}.save({save_model!r})")
        else:
            lines.append(f"{step.name}(adata{args})")
    if pipe.output:
        lines += ["", f"write_h5ad_atomic(adata, {str(pipe.output)!r})"]
    return "\n".join(lines) + "\n"


def _var(step_id: str) -> str:
    return "model_" + "".join(c if c.isalnum() else "_" for c in step_id)


# -- tuning ---------------------------------------------------------------------------------------
_TUNE_KEYS = {"pipeline", "tune", "space", "trials", "sampler", "metric", "labels_key", "seed", "prune",
              "output", "table"}


def tune_from_yaml(path: str | os.PathLike, *, trials: int | None = None, output: str | None = None):
    """Run a tuning file (``scnapse tune``): search the space of one step of a pipeline, then write
    the pipeline with the best parameters. Returns ``(best_pipeline, adata_with_uns_tune)``.

    A tuning file::

        pipeline: sample_data/pbmc_autoencoder.yaml   # a pipeline file, or the pipeline inline
        tune: autoencoder                             # the id of the step to tune
        metric: knn_accuracy                          # see sn.tl.tune
        labels_key: bulk_labels
        sampler: tpe                                  # tpe | random | grid
        trials: 20
        space:
          lr: {log_uniform: [1.0e-4, 1.0e-2]}
          dropout: {uniform: [0.0, 0.4]}
          hidden: {choice: [[64], [128], [256, 128]]}
        output: results/tuned_pipeline.yaml
    """
    from .tl._tune import tune

    path = Path(path)
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a tuning file is a mapping with 'pipeline', 'tune' and 'space'.")
    unknown = sorted(set(data) - _TUNE_KEYS)
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(_TUNE_KEYS)}.")
    src = data.get("pipeline")
    pipe = Pipeline.from_yaml(src) if isinstance(src, str) else Pipeline.from_dict(src, where=str(path))
    ids = [s.id for s in pipe.steps]
    target = data.get("tune")
    if target not in ids:
        raise PipelineError(f"{path}: 'tune: {target}' names no step; step ids: {ids}.")
    idx = ids.index(target)
    step = pipe.steps[idx]
    if step.name not in ("scnapse.tl.autoencoder", "scnapse.tl.train_classifier"):
        raise PipelineError(f"{path}: step {target!r} is {step.name}; tuning supports scnapse.tl.autoencoder "
                            "and scnapse.tl.train_classifier.")
    before = Pipeline(steps=pipe.steps[:idx], input=pipe.input, seed=pipe.seed, device=pipe.device,
                      name=pipe.name) if idx else None
    adata, _ = load_input(pipe.input)
    if before is not None:
        adata = before.run(adata, write=False)
    space = data.get("space") or {}
    fixed = {k: v for k, v in step.params.items() if k not in space}
    fixed.setdefault("device", pipe.device)
    labels_key = data.get("labels_key", fixed.pop("labels_key", None))
    tune(adata, space=space, step=step.name, n_trials=int(trials or data.get("trials", 20)),
         sampler=data.get("sampler", "tpe"), metric=data.get("metric"), labels_key=labels_key,
         fixed=fixed, prune=bool(data.get("prune", True)), seed=int(data.get("seed", pipe.seed)))
    rec = adata.uns["tune"]
    best = copy.deepcopy(pipe)
    best_params = {k: v for k, v in dict(rec["best_params"]).items() if k != "device"}
    for k, v in best_params.items():
        best.steps[idx].params[k] = v.tolist() if hasattr(v, "tolist") else v
    best.validate(where="tuned pipeline")
    out = output or data.get("output")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(f"# tuned by scnapse tune ({rec['sampler']}, {rec['n_trials']} trials): "
                             f"best {rec['metric']} = {rec['best_value']:.4g}\n" + best.to_yaml())
    if data.get("table"):
        rec["trials"].to_csv(data["table"])
    return best, adata
