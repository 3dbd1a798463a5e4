"""Running a validated pipeline: the steps in order, models passed between them, provenance."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .._settings import logger
from .readers import file_checksum, load_input
from .registry import PipelineError, StepSpec, get_step
from .safety import check_writes, confine_root, planned_writes
from .writer import write_h5ad_atomic


def run_pipeline(pipe, adata=None, *, output: str | os.PathLike | None = None, write: bool = True,
                 overwrite: bool = False, confine=False):
    """Run ``pipe`` on ``adata`` (or its input) and write the output atomically; see
    :meth:`scnapse.pipeline.Pipeline.run`."""
    from ..train.distributed import is_main_process

    check_before_run(pipe, adata, output=output, write=write, overwrite=overwrite, confine=confine)
    source_path = None
    if adata is None:
        if pipe.input is None:
            raise PipelineError("This pipeline has no 'input'; give one, or pass an AnnData to run().")
        adata, source_path = load_input(pipe.input)
    out_path = output or pipe.output
    if write and out_path and source_path and Path(out_path).resolve() == Path(source_path).resolve():
        raise PipelineError(f"The output {str(out_path)!r} is the input file; a run never overwrites its input. "
                            "Choose another output.")
    checksum = file_checksum(source_path) if source_path else None
    main = is_main_process()  # under torchrun only rank 0 writes files
    timings, resolved = [], []
    pipe.models = {}
    for i, step in enumerate(pipe.steps):
        spec = get_step(step.name)
        params = pipe.resolved_params(step, spec)
        if not main and params.get("save"):
            params = {**params, "save": None}
        logger.info(f"[{i + 1}/{len(pipe.steps)}] {step.name}")
        t0 = time.perf_counter()
        _run_step(spec, step.id, adata, params, pipe.models, save=write and main)
        timings.append(round(time.perf_counter() - t0, 4))
        logger.info(f"[{i + 1}/{len(pipe.steps)}] {step.name} done in {timings[-1]:.1f} s")
        resolved.append({"step": step.name, "id": step.id, "params": params})
    adata.uns["scnapse"] = provenance(pipe, resolved, timings, source_path, checksum)
    if write and out_path and main:
        write_h5ad_atomic(adata, out_path)
        logger.info(f"wrote {out_path}")
    return adata


def check_before_run(pipe, adata=None, *, output=None, write: bool = True, overwrite: bool = False,
                     confine=False) -> list[tuple[str, str]]:
    """The check phase's last part: every path the run will write (logged), each checked (see
    :func:`~.safety.check_writes`). Returns the ``(what, path)`` list."""
    writes = planned_writes(pipe, output if write else None)
    source = pipe.input if adata is None and isinstance(pipe.input, (str, os.PathLike)) else None
    for what, path in writes:
        if source is not None and Path(path).resolve() == Path(source).resolve():
            raise PipelineError(f"The {what} {path!r} is the input file; a run never overwrites its input. "
                                "Choose another path.")
    if adata is not None:  # the input is not read, so its crops_file is not written
        writes = [w for w in writes if w[0] != "crops"]
    if not write:  # models are saved, and the output written, only when writing
        writes = [w for w in writes if w[0] not in ("model", "output")]
    check_writes(writes, overwrite=overwrite, confine=confine_root(pipe, confine))
    for what, path in writes:
        logger.info(f"will write {what}: {path}")
    return writes


def _run_step(spec: StepSpec, step_id: str, adata, params: dict, models: dict, *, save: bool) -> None:
    """Call one step: a model it takes is looked up (an earlier step's, or loaded from its folder);
    a model it returns is kept under ``step_id`` (and saved to ``save_model`` when ``save``)."""
    call = dict(params)
    save_model = call.pop("save_model", None)
    if spec.takes_model:
        ref = call.get("model")
        if ref in models:
            call["model"] = models[ref]
        elif isinstance(ref, str):
            from ..models import load as load_model

            call["model"] = load_model(ref)
    if spec.trains and spec.run_options and call.get("callback") is None:
        call["callback"] = EpochLog(step_id)  # a training step shows how far it is
    result = spec.func(adata, **call)
    if spec.returns_model:
        models[step_id] = result
        if save_model and save:
            result.save(save_model)


#: seconds between two epoch lines of a training step (the first and the last epoch are always shown)
EPOCH_LOG_SECONDS = 10.0


class EpochLog:
    """A training callback that logs a line per epoch, at most every :data:`EPOCH_LOG_SECONDS`:
    ``  autoencoder: epoch 12/200  train loss 0.41  validation loss 0.43  best epoch 11``."""

    def __init__(self, label: str):
        self.label = label
        self._last: float | None = None

    def __call__(self, report) -> None:
        now = time.perf_counter()
        if self._last is not None and now - self._last < EPOCH_LOG_SECONDS and report.epoch != report.max_epochs:
            return
        self._last = now
        val = "" if report.val_loss is None else f"  validation loss {report.val_loss:.4g}"
        logger.info(f"  {self.label}: epoch {report.epoch}/{report.max_epochs}  train loss "
                    f"{report.train_loss:.4g}{val}  best epoch {report.best_epoch}")


def provenance(pipe, resolved: list[dict], timings: list[float], source_path, checksum) -> dict:
    """What ``uns['scnapse']`` records: the pipeline, resolved parameters, versions, the input."""
    from .. import __version__
    from .._anndata import sanitize_for_uns
    from ..train.repro import package_versions

    return sanitize_for_uns({
        "pipeline": pipe.to_yaml(),
        "resolved_steps": resolved,
        "seed": pipe.seed,
        "device": pipe.device,
        "versions": {**package_versions(), "scnapse": __version__},
        "input": str(source_path) if source_path else "in memory",
        "input_sha256": checksum,
        "step_seconds": timings,
    })
