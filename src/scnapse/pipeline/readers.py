"""A pipeline's input: a bundled data set, an AnnData / CSV / 10x file, an image with labels, or a tracking table."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .registry import PipelineError

#: the bundled data sets a pipeline may name as ``input: {dataset: NAME}``: a file of the sample data
#: (``.h5ad``) or the name of a :mod:`scnapse.datasets` function that builds the set
DATASETS = {"pbmc68k": "pbmc68k_reduced_counts.h5ad", "pbmc160": "decoupler_pbmc160.h5ad", "guo_qpcr": "guo_qpcr.h5ad",
            "pbmc_cross_study": "pbmc_cross_study", "simulated_batches": "simulated_batches"}


def load_input(spec):
    """Read a pipeline's input: ``{dataset: name}`` (bundled), ``{image: PATH, labels: PATH}``,
    ``{tracks: PATH}`` (a tracking table, one sequence per track), or a path to ``.h5ad``, ``.csv`` / ``.tsv`` (cells × genes), a 10x ``.h5`` file or a 10x mtx
    folder. Returns ``(adata, path)``."""
    import anndata as ad

    if isinstance(spec, dict) and "image" in spec:
        return _load_image_input(spec)
    if isinstance(spec, dict) and "tracks" in spec:
        return _load_tracks_input(spec)
    if isinstance(spec, dict):
        return _load_dataset(spec)
    path = Path(str(spec))
    if not path.exists():
        raise FileNotFoundError(f"The pipeline's input {str(path)!r} does not exist (relative paths start "
                                f"from the working directory, {os.getcwd()}).")
    suffix = path.suffix.lower()
    if suffix == ".h5ad" and not path.is_dir():
        return ad.read_h5ad(path), path
    if not (path.is_dir() or suffix in (".h5", ".csv", ".tsv", ".txt")):
        raise PipelineError(f"input {str(path)!r}: unsupported type {suffix!r}; use .h5ad, .csv, .tsv, a 10x .h5 "
                            "or mtx folder.")
    import scanpy as sc

    if path.is_dir():
        return sc.read_10x_mtx(path), path
    if suffix == ".h5":
        return sc.read_10x_h5(path), path
    return sc.read_csv(path, delimiter="\t" if suffix != ".csv" else ","), path


def _load_dataset(spec: dict):
    import anndata as ad

    from .. import datasets

    if set(spec) != {"dataset"}:
        raise PipelineError(f"input {spec!r}: write {{dataset: NAME}}, {{image: PATH, labels: PATH}}, {{tracks: PATH}} "
                            "or a file path.")
    name = spec["dataset"]
    if name not in DATASETS:
        raise PipelineError(f"input dataset {name!r} is not bundled; choose one of {sorted(DATASETS)}.")
    source = DATASETS[name]
    if not source.endswith(".h5ad"):  # built in memory (no single source file to checksum)
        return getattr(datasets, source)(), None
    path = datasets.sample_path(source)
    return ad.read_h5ad(path), path


def _load_image_input(spec: dict):
    """``{image: img.tif, labels: labels.tif, size: 48, channel_axis: ..}`` → one row per object
    (``sn.im.cells_from_labels``); the other keys are its options."""
    import tifffile

    from ..im import cells_from_labels

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
    except OSError as err:  # crops_file: a folder that does not exist, no permission, a full disk
        where = f"crops_file {str(spec.get('crops_file'))!r}" if spec.get("crops_file") else "the image input"
        raise PipelineError(f"input: {where} cannot be written ({err.strerror or err}); choose a path in a "
                            "folder that exists and that you can write to.") from None
    return cells, paths[0]


def _load_tracks_input(spec: dict):
    """``{tracks: tracks.csv, graph: {child: [parents]}, ..}`` → one sequence per track
    (``sn.ts.from_tracks``): a table with one row per object per time point (``track_id``,
    ``frame``, the coordinates and measurements); the other keys are ``from_tracks``'s options."""
    import pandas as pd

    from ..ts import from_tracks

    path = Path(str(spec["tracks"]))
    if not path.exists():
        raise FileNotFoundError(f"The pipeline's input {str(path)!r} does not exist.")
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise PipelineError(f"input tracks {str(path)!r}: a tracks input is a .csv or .tsv table (one row per object "
                            "per time point).")
    table = pd.read_csv(path, sep="," if path.suffix.lower() == ".csv" else "\t")
    options = {k: v for k, v in spec.items() if k != "tracks"}
    try:
        return from_tracks(table, **options), path
    except TypeError as err:
        raise PipelineError(f"input {spec!r}: {err}") from None


def file_checksum(path) -> str:
    """SHA-256 of a file, or of every file in a folder (in sorted order)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    for f in files:
        if f.is_file():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
