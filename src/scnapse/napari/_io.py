"""The plugin's reader (``.h5ad`` → Points layer), writer (Points layer → ``.h5ad``) and sample data.

No Qt and no torch here: napari opens an ``.h5ad`` file without loading either.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..pipeline.session import Session
from ..pipeline.writer import write_h5ad_atomic
from ._layers import ADATA, adata_layer_data


def napari_get_reader(path):
    """npe2 reader: a function reading ``.h5ad`` files, or ``None`` for other paths."""
    if isinstance(path, list):
        if not path or not all(str(p).lower().endswith(".h5ad") for p in path):
            return None
    elif not str(path).lower().endswith(".h5ad"):
        return None
    return read_h5ad


def read_h5ad(path) -> list[tuple]:
    """Open ``.h5ad`` file(s) as Points layers of their embedding (the AnnData kept with the layer)."""
    paths = path if isinstance(path, list) else [path]
    out = []
    for p in paths:
        adata = ad.read_h5ad(p)
        name = Path(p).name.removesuffix(".h5ad")
        data, kwargs, kind = adata_layer_data(adata, session=Session(input=str(p)))
        kwargs["name"] = f"{name} ({kwargs['metadata']['scnapse_view']['obsm_key'] or 'no embedding'})"
        out.append((data, kwargs, kind))
    return out


def write_h5ad(path: str, data, attributes: dict) -> list[str]:
    """npe2 writer for a Points layer: its AnnData (with everything the panels wrote) as ``.h5ad``.

    A Points layer that carries no AnnData is written as one: coordinates in ``obsm['X_napari']``,
    features in ``obs``.
    """
    adata = (attributes.get("metadata") or {}).get(ADATA)
    if adata is None:
        features = attributes.get("features")
        obs = pd.DataFrame(features).reset_index(drop=True) if features is not None else pd.DataFrame(
            index=range(len(data)))
        obs.index = obs.index.astype(str)
        adata = ad.AnnData(obs=obs)
        adata.obsm["X_napari"] = np.asarray(data, dtype=float)
    if not str(path).lower().endswith(".h5ad"):
        path = f"{path}.h5ad"
    write_h5ad_atomic(adata, path)
    return [str(path)]


def sample_pbmc68k() -> list[tuple]:
    """700 PBMCs (raw counts) on their UMAP, coloured by ``bulk_labels``."""
    from .. import datasets

    adata = datasets.pbmc68k()
    data, kwargs, kind = adata_layer_data(adata, color_by="bulk_labels",
                                          session=Session(input={"dataset": "pbmc68k"}), name="pbmc68k (X_umap)")
    return [(data, kwargs, kind)]


def sample_pbmc160() -> list[tuple]:
    """160 PBMCs × 8,674 genes (no embedding yet: cells on a grid), coloured by ``cell_type``."""
    from .. import datasets

    adata = datasets.pbmc160()
    data, kwargs, kind = adata_layer_data(adata, color_by="cell_type",
                                          session=Session(input={"dataset": "pbmc160"}), name="pbmc160 (no embedding)")
    return [(data, kwargs, kind)]


def sample_nuclei() -> list[tuple]:
    """Fluorescence nuclei (DSB 2018, 512 × 512) with their segmentation, for the Image model panel."""
    from ..im import sample_image

    image, labels = sample_image("dsb2018")
    return [(image, {"name": "nuclei"}, "image"), (labels, {"name": "nuclei labels", "opacity": 0.6}, "labels")]


def sample_tracks() -> list[tuple]:
    """Tracked nuclei from the TGMM mini data set as a Tracks layer (``track_id, t, z, y, x``)."""
    from .. import datasets

    table = pd.read_csv(datasets.sample_path("tgmm-mini-tracks-layer-data.csv.gz"))
    cols = ["label", "frame", "centroid-z", "centroid-y", "centroid-x"]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"the tracks sample lacks column(s) {missing}; columns: {list(table.columns)}.")
    data = table[cols].to_numpy(dtype=float)  # napari Tracks: track_id, t, z, y, x
    features = pd.DataFrame({"divides": track_divides(table)})
    return [(data, {"name": "tgmm tracks", "features": features}, "tracks")]


def track_divides(table: pd.DataFrame) -> np.ndarray:
    """Whether each row's track ends in a division, from the sample's Mastodon spot table (its branches
    matched to the tracks by the nearest spot of the same frame, the branch most of a track's spots
    match)."""
    from scipy.spatial import cKDTree

    from .. import datasets
    from ..ts import read_mastodon_csv

    spots = read_mastodon_csv(datasets.sample_path("tgmm-mini-spot.csv.gz"))
    branch = np.empty(len(table), dtype=np.int64)
    for frame, rows in table.groupby("frame").indices.items():
        here = spots[spots["frame"] == frame]
        _, nearest = cKDTree(here[["Spot position Y", "Spot position X"]].to_numpy()).query(
            table.iloc[rows][["centroid-y", "centroid-x"]].to_numpy())
        branch[rows] = here["Branch spot ID"].to_numpy()[nearest]
    per_track = pd.DataFrame({"track": table["label"].to_numpy(), "branch": branch})
    majority = per_track.groupby("track")["branch"].agg(lambda b: b.value_counts().index[0])
    ends = set(spots.loc[spots["divides"], "Branch spot ID"])
    divides = majority.map(lambda b: b in ends)
    return table["label"].map(divides).to_numpy(dtype=bool)
