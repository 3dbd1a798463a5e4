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

Relative paths are relative to the working directory. Only registered steps can run
(:func:`step_names`; scnapse's register themselves with :func:`~.registry.step`): a pipeline file
can never execute arbitrary code. Everything is checked before anything runs.

The modules: :mod:`.registry` (which steps exist and how they are treated), :mod:`.schema` (the
format and its checks), :mod:`.runner`, :mod:`.readers` (inputs), :mod:`.writer` (atomic
output), :mod:`.export` (as a script), :mod:`.tuning` (tuning files), :mod:`.session` (what a GUI
session ran). Importing this package imports neither torch nor scanpy.
"""

from __future__ import annotations

from .export import export_script
from .readers import file_checksum, load_input
from .registry import (
    SCANPY_STEPS, PipelineError, StepSpec, get_step, public_name, register_step, step, step_names, steps_where,
)
from .schema import FORMAT_VERSION, Pipeline, Step
from .session import ModelRef, Session
from .tuning import tune_from_yaml
from .writer import write_h5ad_atomic

__all__ = [
    "FORMAT_VERSION", "MODEL_STEPS", "SCANPY_STEPS", "ModelRef", "Pipeline", "PipelineError", "Session", "Step",
    "StepSpec", "export_script", "file_checksum", "get_step", "load_input", "public_name", "register_step", "step",
    "step_names", "steps_where", "tune_from_yaml", "write_h5ad_atomic",
]


def __getattr__(name: str):
    # computed from the registry on use (the step modules load then): the steps that return a
    # model / take one, as the hand-kept tables of earlier versions listed them
    if name == "MODEL_STEPS":
        return {n: n.split(".", 1)[1] for n in steps_where(returns_model=True)}
    if name == "_MODEL_USERS":
        return tuple(steps_where(takes_model=True))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
