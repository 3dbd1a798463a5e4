"""Open a cell × gene matrix without reading it: a backed ``.h5ad`` file or a zarr store."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData


def read_backed(path: str | os.PathLike) -> AnnData:
    """An AnnData whose ``X`` stays on disk; every scnapse step trains and infers on it in chunks.

    ``.h5ad``: ``anndata.read_h5ad(path, backed="r")``. A zarr store (a ``.zarr`` folder written
    by ``adata.write_zarr``): ``obs`` and ``var`` are read, ``X`` is opened on disk (a sparse
    dataset, or a zarr array for dense data); layers and other slots are not read.

    Close an ``.h5ad`` with ``adata.file.close()`` when done.
    """
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{str(p)!r} does not exist.")
    if p.is_file() and p.suffix.lower() == ".h5ad":
        try:
            return ad.read_h5ad(p, backed="r")
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(
                f"{str(p)!r} cannot be read as an .h5ad file (truncated, still being written, or not HDF5): "
                f"{err}. Write it again (adata.write_h5ad) or check the copy."
            ) from None
    if p.is_dir() and ((p / "zarr.json").exists() or (p / ".zgroup").exists()):
        import zarr

        group = zarr.open_group(str(p), mode="r")
        if "X" not in group:
            raise ValueError(f"The zarr store {str(p)!r} has no X matrix.")
        node = group["X"]
        encoding = dict(node.attrs).get("encoding-type", "")
        X = ad.io.sparse_dataset(node) if encoding in ("csr_matrix", "csc_matrix") else node
        return AnnData(X=X, obs=ad.io.read_elem(group["obs"]), var=ad.io.read_elem(group["var"]))
    raise ValueError(
        f"{str(p)!r} is neither an .h5ad file nor a zarr store (a folder written by adata.write_zarr)."
    )
