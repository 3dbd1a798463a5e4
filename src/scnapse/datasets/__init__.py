"""Real data shipped with scnapse (no download): see ``sample_data/SOURCES.md``."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

_HERE = Path(__file__).resolve()


def sample_data_dir() -> Path:
    """The folder of the bundled data (inside the wheel, or ``sample_data/`` of a checkout).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    for cand in (_HERE.parents[1] / "_sample_data", _HERE.parents[3] / "sample_data"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("scnapse's sample data were not found; reinstall scnapse.")


def sample_path(name: str) -> Path:
    """The path of one bundled file, checked to exist.

    Parameters
    ----------
    name
        File name inside the sample-data folder (e.g. ``"pbmc68k_reduced_counts.h5ad"``).

    Returns
    -------
    pathlib.Path
        The file's path.
    """
    path = sample_data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is not among scnapse's sample data ({sample_data_dir()}).")
    return path


def pbmc68k() -> ad.AnnData:
    """700 PBMCs × 765 genes, raw integer counts (sparse); ``obs['bulk_labels']``: 10 cell types.

    scanpy's ``pbmc68k_reduced`` with counts recovered from its log-normalised ``raw``
    (10x Genomics, CC BY 4.0; scanpy BSD-3).

    Returns
    -------
    AnnData
        A new object on every call (safe to modify).
    """
    return ad.read_h5ad(sample_path("pbmc68k_reduced_counts.h5ad"))


def pbmc160() -> ad.AnnData:
    """160 PBMCs × 8,674 genes, raw counts; ``obs['cell_type']``: 8 types × 20 cells.

    ``layers['lognorm']`` holds the log-normalised values. A pbmc3k subset from Bioconductor's
    decoupler data (10x, CC BY 4.0).

    Returns
    -------
    AnnData
        A new object on every call (safe to modify).
    """
    return ad.read_h5ad(sample_path("decoupler_pbmc160.h5ad"))
