"""Tuning files (``scnapse tune``): search one training step of a pipeline, write the best pipeline."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from .readers import load_input
from .registry import PipelineError, get_step, steps_where
from .schema import Pipeline

TUNE_KEYS = ("pipeline", "tune", "space", "trials", "sampler", "metric", "labels_key", "seed", "prune",
             "output", "table")
#: step parameters that only a pipeline understands (not passed to a trial)
_PIPELINE_ONLY = ("save_model",)


def tune_from_yaml(path: str | os.PathLike, *, trials: int | None = None, output: str | None = None):
    """Run a tuning file (``scnapse tune``): search the space of one training step of a pipeline,
    then write the pipeline with the best parameters. Returns ``(best_pipeline, adata_with_uns_tune)``.

    A tuning file::

        pipeline: sample_data/pbmc_autoencoder.yaml   # a pipeline file, or the pipeline inline
        tune: autoencoder                             # the id of the step to tune (any training step)
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
    from ..tl._tune import tune

    path = Path(path)
    data = _read(path)
    pipe, idx = _target(data, path)
    step = pipe.steps[idx]
    adata, _ = load_input(pipe.input)
    if idx:
        before = Pipeline(steps=pipe.steps[:idx], input=pipe.input, seed=pipe.seed, device=pipe.device,
                          deterministic=pipe.deterministic, name=pipe.name)
        adata = before.run(adata, write=False)
    space = data.get("space") or {}
    fixed = {k: v for k, v in step.params.items() if k not in space and k not in _PIPELINE_ONLY}
    fixed.setdefault("device", pipe.device)
    labels_key = data.get("labels_key", fixed.pop("labels_key", None))
    tune(adata, space=space, step=step.name, n_trials=int(trials or data.get("trials", 20)),
         sampler=data.get("sampler", "tpe"), metric=data.get("metric"), labels_key=labels_key,
         fixed=fixed, prune=bool(data.get("prune", True)), seed=int(data.get("seed", pipe.seed)))
    rec = adata.uns["tune"]
    best = copy.deepcopy(pipe)
    for k, v in dict(rec["best_params"]).items():
        if k != "device":
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


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"Tuning file {str(path)!r} does not exist"
                                + (" (it is a folder)." if path.is_dir() else "."))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:  # a !!python tag too: safe_load never builds objects
        raise PipelineError(f"{path} is not a valid tuning file (plain YAML only; tags such as !!python are "
                            f"refused): {err}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not a text file; a tuning file is YAML.") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a tuning file is a mapping with 'pipeline', 'tune' and 'space'.")
    unknown = sorted(set(data) - set(TUNE_KEYS))
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(TUNE_KEYS)}.")
    return data


def _target(data: dict, path: Path) -> tuple[Pipeline, int]:
    """The pipeline and the index of the (training) step to tune."""
    src = data.get("pipeline")
    pipe = Pipeline.from_yaml(src) if isinstance(src, str) else Pipeline.from_dict(src, where=str(path))
    ids = [s.id for s in pipe.steps]
    target = data.get("tune")
    if target not in ids:
        raise PipelineError(f"{path}: 'tune: {target}' names no step; step ids: {ids}.")
    idx = ids.index(target)
    name = pipe.steps[idx].name
    if not get_step(name).trains:
        raise PipelineError(f"{path}: step {target!r} is {name}, which trains nothing; tuning works on the "
                            f"training steps: {steps_where(trains=True)}.")
    return pipe, idx
