"""Command line: ``scnapse run``, ``scnapse demo``, ``scnapse export``, ``scnapse info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args) -> int:
    from .pipeline import Pipeline

    pipe = Pipeline.from_yaml(args.pipeline)
    for assignment in args.set or []:
        pipe.set(assignment)
    if args.output:
        pipe.output = args.output
    if not pipe.output:
        raise SystemExit("error: the pipeline names no 'output'; give --output PATH.")
    if args.checkpoint_dir or args.resume:
        _checkpointing(pipe, args.checkpoint_dir, args.resume)
    if args.dry_run:
        return _dry_run(pipe, args)
    from ._settings import logger
    from .train import distributed

    if distributed.init_distributed(pipe.device) and not distributed.is_main_process():
        logger.setLevel("WARNING")  # one log, from rank 0
    try:
        pipe.run(overwrite=args.overwrite, confine=args.confine)
    finally:
        distributed.destroy()
    return 0


def _dry_run(pipe, args) -> int:
    """--dry-run: check everything, print every path the run would write, run nothing."""
    from .pipeline.runner import check_before_run

    check_before_run(pipe, overwrite=args.overwrite, confine=args.confine)
    print(f"{pipe.name}: {len(pipe.steps)} steps checked; the run would write:")
    for what, path in pipe.writes():
        print(f"  {what:<12} {path!r}")
    print("Nothing was run (--dry-run).")
    return 0


def _checkpointing(pipe, directory: str | None, resume: bool) -> None:
    """--checkpoint-dir DIR: steps that can checkpoint save to DIR/<step id> (unless the pipeline
    says where); --resume: those steps continue from their checkpoint."""
    import inspect

    from .pipeline import get_step

    found = []
    for step in pipe.steps:
        spec = get_step(step.name)
        if not (spec.run_options or "resume" in inspect.signature(spec.func).parameters):
            continue
        if directory and not step.params.get("checkpoint_dir"):
            step.params["checkpoint_dir"] = str(Path(directory) / step.id)
        if step.params.get("checkpoint_dir"):
            if resume:
                step.params["resume"] = True
            found.append(step.id)
    if not found:
        raise SystemExit(
            "error: no step of this pipeline saves checkpoints: give --checkpoint-dir DIR (on the first "
            "run too), or set checkpoint_dir in the training step's params."
        )
    pipe.validate(where="after --checkpoint-dir/--resume")


def _cmd_demo(args) -> int:
    import pandas as pd

    from .datasets import sample_path
    from .pipeline import Pipeline

    pipe = Pipeline.from_yaml(sample_path("pbmc_autoencoder.yaml"))
    out_dir = Path(args.output_dir)
    pipe.output = str(out_dir / Path(pipe.output).name)
    for step in pipe.steps:
        if "save" in step.params:
            step.params["save"] = str(out_dir / Path(step.params["save"]).name)
    adata = pipe.run()
    table = adata.uns.get("embedding_comparison")
    print(f"\n{pipe.name}: {adata.n_obs} real PBMCs, scored against their known types (obs['bulk_labels'])")
    if isinstance(table, pd.DataFrame):
        print(table.round(3).to_string())
    print(f"\nwrote {pipe.output} and the plots in {out_dir}/")
    return 0


def _cmd_export(args) -> int:
    from .pipeline import Pipeline, export_script

    pipe = Pipeline.from_yaml(args.pipeline)
    sys.stdout.write(export_script(pipe))
    return 0


def _cmd_tune(args) -> int:
    from .pipeline import tune_from_yaml

    best, adata = tune_from_yaml(args.file, trials=args.trials, output=args.output)
    rec = adata.uns["tune"]
    print(rec["trials"].to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"\nbest {rec['metric']} = {rec['best_value']:.4g} with {dict(rec['best_params'])}")
    return 0


def _cmd_info(args) -> int:
    adata = _read_for_info(args.file)
    rec = adata.uns.get("scnapse")
    print(f"{args.file}: {adata.n_obs} cells × {adata.n_vars} genes")
    print("obsm:", ", ".join(adata.obsm.keys()) or "-")
    if not rec:
        print("No scnapse provenance in this file (it was not written by `scnapse run`).")
        return 1
    print("\nProduced by this pipeline:\n" + str(rec.get("pipeline", "")).rstrip())
    print(f"\ninput: {rec.get('input')}  sha256: {rec.get('input_sha256')}")
    print(f"seed: {rec.get('seed')}  device: {rec.get('device')}")
    steps = rec.get("resolved_steps", {})
    secs = list(rec.get("step_seconds", []))
    print("\nsteps (resolved parameters, seconds):")
    items = steps.values() if isinstance(steps, dict) else steps
    for i, s in enumerate(items):
        t = f"{secs[i]:.2f}s" if i < len(secs) else ""
        print(f"  {i + 1}. {s.get('step')} {dict(s.get('params', {}))} {t}")
    print("\nversions:", ", ".join(f"{k} {v}" for k, v in dict(rec.get("versions", {})).items()))
    return 0


def _read_for_info(file: str):
    """The ``.h5ad`` ``file`` opened backed, or a clear error (missing, not HDF5, not AnnData)."""
    import anndata as ad
    import h5py

    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"{file!r} does not exist" + (" (it is a folder)." if path.is_dir() else "."))
    if not h5py.is_hdf5(path):
        raise ValueError(f"{file!r} is not an .h5ad file (not HDF5); `scnapse info` reads the .h5ad files that "
                         "`scnapse run` writes.")
    try:
        return ad.read_h5ad(path, backed="r")
    except Exception as err:  # anndata's errors for HDF5 files that are not AnnData vary by version
        raise ValueError(f"{file!r} is an HDF5 file but not a readable .h5ad ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}).") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scnapse", description="Deep learning steps for single-cell data.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"scnapse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a pipeline file (under torchrun: distributed data parallel)")
    p.add_argument("pipeline")
    p.add_argument("--output", help="write here instead of the pipeline's output")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a parameter, e.g. steps.autoencoder.lr=3e-4 (repeatable)")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="training steps save checkpoints in DIR/<step id> (every checkpoint_every epochs)")
    p.add_argument("--resume", action="store_true",
                   help="continue training steps from their last checkpoint (same pipeline, same --checkpoint-dir)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the pipeline, print every path it would write, and run nothing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output / save_model folder even if scnapse did not write it")
    p.add_argument("--confine", action="store_true",
                   help="refuse any write outside the pipeline file's folder (absolute paths, '..')")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("demo", help="run the bundled sample pipeline (PBMC autoencoder vs PCA)")
    p.add_argument("--output-dir", default="results")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("export", help="print a pipeline as a plain Python script")
    p.add_argument("pipeline")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("tune", help="search hyperparameters of a pipeline step; write the best pipeline")
    p.add_argument("file", help="tuning file (see scnapse.pipeline.tune_from_yaml)")
    p.add_argument("--trials", type=int, help="number of trials (overrides the file)")
    p.add_argument("--output", help="where to write the best pipeline (overrides the file)")
    p.set_defaults(func=_cmd_tune)
    p = sub.add_parser("info", help="show what produced an .h5ad file")
    p.add_argument("file")
    p.set_defaults(func=_cmd_info)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, OSError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
