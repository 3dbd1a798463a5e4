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


def guo_qpcr() -> ad.AnnData:
    """428 mouse early-embryo cells × 48 genes, single-cell qPCR ΔCt (real-valued, not counts);
    ``obs['stage']``: embryo stage ``2-cell`` … ``64-cell`` (6 stages, 19–159 cells each).

    Guo et al. 2010 (Developmental Cell 18:675–685): cells of 42 embryos from the 2-cell stage to
    the 64-cell blastocyst. ``X`` holds ΔCt, each cell's Ct minus the mean Ct of its housekeeping
    genes Actb and Gapdh: **higher means fewer transcripts**, and values are negative where a gene
    is more abundant than the housekeepers. ``layers['ct']`` holds the Ct values themselves (28 =
    not detected, about a quarter of the entries). ``obs['num_cells']`` is the stage as an integer,
    ``obs['embryo']`` the embryo a cell came from (e.g. ``"16C 3"``). Lineage labels (TE, ICM,
    PE, EPI) are not included.

    From Bioconductor's destiny package (GPL-3), with the housekeeper normalisation redone from
    its Ct values (see ``sample_data/SOURCES.md``). A set for features of any kind:
    :func:`scnapse.tl.train_classifier` standardises such values inside the model.

    Returns
    -------
    AnnData
        A new object on every call (safe to modify); dense float32 ``X``.
    """
    return ad.read_h5ad(sample_path("guo_qpcr.h5ad"))


#: cell-type names of ``pbmc68k`` (``obs['bulk_labels']``) and ``pbmc160`` (``obs['cell_type']``)
#: mapped to the names :func:`pbmc_cross_study` shares between them. A type with no counterpart in
#: the other study keeps a name of its own (it is *batch-specific*: an integration that merges it
#: into another type over-corrects).
CROSS_STUDY_LABELS = {
    "pbmc68k": {
        "CD19+ B": "B",
        "CD14+ Monocyte": "CD14 monocytes",
        "CD56+ NK": "NK",
        "CD8+ Cytotoxic T": "CD8 T",
        "CD8+/CD45RA+ Naive Cytotoxic": "CD8 T",
        "CD4+/CD25 T Reg": "CD4 T",
        "CD4+/CD45RO+ Memory": "CD4 T",
        "CD4+/CD45RA+/CD25- Naive T": "CD4 T",
        "Dendritic": "DC",
        "CD34+": "CD34+ progenitors",  # only in pbmc68k
    },
    "pbmc160": {
        "B": "B",
        "CD14+ Mono": "CD14 monocytes",
        "NK": "NK",
        "CD8 T": "CD8 T",
        "Memory CD4 T": "CD4 T",
        "Naive CD4 T": "CD4 T",
        "DC": "DC",
        "FCGR3A+ Mono": "FCGR3A+ monocytes",  # only in pbmc160
    },
}


def pbmc_cross_study() -> ad.AnnData:
    """Two PBMC studies as two batches: :func:`pbmc68k` (700 cells) and :func:`pbmc160` (160 cells)
    on the genes they share (743), raw counts in ``X``.

    ``obs['batch']`` is ``"pbmc68k"`` or ``"pbmc160"``; ``obs['cell_type']`` holds the harmonised
    names of :data:`CROSS_STUDY_LABELS`; ``obs['original_cell_type']`` the study's own label.

    Harmonised ``cell_type`` ← pbmc68k's ``bulk_labels``; pbmc160's ``cell_type``:

    - B: pbmc68k ``CD19+ B``; pbmc160 ``B``
    - CD14 monocytes: ``CD14+ Monocyte``; ``CD14+ Mono``
    - NK: ``CD56+ NK``; ``NK``
    - CD8 T: ``CD8+ Cytotoxic T``, ``CD8+/CD45RA+ Naive Cytotoxic``; ``CD8 T``
    - CD4 T: ``CD4+/CD25 T Reg``, ``CD4+/CD45RO+ Memory``, ``CD4+/CD45RA+/CD25- Naive T``;
      ``Memory CD4 T``, ``Naive CD4 T``
    - DC: ``Dendritic``; ``DC``
    - CD34+ progenitors: ``CD34+`` (pbmc68k only)
    - FCGR3A+ monocytes: ``FCGR3A+ Mono`` (pbmc160 only)

    The two types with no counterpart are kept (13 and 20 cells) under their own names: they are
    the batch-specific populations an over-correcting integration merges into a shared type.
    Drop them with ``adata[adata.obs['cell_type'].isin(shared)]`` if a benchmark needs only
    shared types.

    Returns
    -------
    anndata.AnnData
        860 cells × 743 genes (sorted by name), sparse float32 counts.
    """
    import pandas as pd
    import scipy.sparse as sp

    parts = {"pbmc68k": (pbmc68k(), "bulk_labels"), "pbmc160": (pbmc160(), "cell_type")}
    shared = sorted(set(parts["pbmc68k"][0].var_names) & set(parts["pbmc160"][0].var_names))
    blocks, obs = [], []
    for batch, (adata, col) in parts.items():
        original = adata.obs[col].astype(str)
        mapping = CROSS_STUDY_LABELS[batch]
        unknown = sorted(set(original) - set(mapping))
        if unknown:  # the shipped files changed: say so rather than produce NaN labels
            raise ValueError(f"{batch}: cell types {unknown} are not in CROSS_STUDY_LABELS[{batch!r}].")
        blocks.append(sp.csr_matrix(adata[:, shared].X, dtype="float32"))
        obs.append(pd.DataFrame({"batch": batch, "cell_type": original.map(mapping).to_numpy(),
                                 "original_cell_type": original.to_numpy()},
                                index=[f"{batch}-{name}" for name in adata.obs_names]))
    obs = pd.concat(obs)
    obs["batch"] = pd.Categorical(obs["batch"], categories=list(parts))
    names = sorted({v for m in CROSS_STUDY_LABELS.values() for v in m.values()})
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=names)
    obs["original_cell_type"] = obs["original_cell_type"].astype("category")
    out = ad.AnnData(sp.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=shared))
    out.uns["dataset"] = {"name": "pbmc_cross_study", "batches": list(parts)}
    return out


def simulated_batches(n_cells: int = 3000, *, n_genes: int = 1000, n_batches: int = 3,
                      n_cell_types: int = 6, batch_effect: float = 0.15, marker_strength: float = 0.5,
                      library_size: float = 1500.0, dispersion: float = 4.0, seed: int = 0) -> ad.AnnData:
    """Simulated counts (negative binomial) in several batches, some cell types missing from some.

    Each cell type has its own log-mean expression (a shared baseline plus up-regulated marker
    genes, 5% of the genes per type). Each batch multiplies every gene by its own factor
    (log-normal with standard deviation ``batch_effect``) and has its own mean library size (a
    factor between 0.6 and 1.6 of ``library_size``, with a cell-wise log-normal spread). Counts
    are negative binomial (gamma–Poisson) with inverse dispersion ``dispersion``.

    The last cell type is missing from the first batch and the one before it is present only in
    the second batch (with three or more types and two or more batches): an integration that
    forces every batch to look alike merges these batch-specific types into others. With the
    defaults the batch effect is strong enough that cells cluster by batch after PCA, not so
    strong that no method can mix them.

    Parameters
    ----------
    n_cells
        Number of cells (split about evenly between the batches).
    n_genes
        Number of genes.
    n_batches
        Number of batches (≥ 2).
    n_cell_types
        Number of cell types (≥ 2).
    marker_strength
        Mean log fold change of a type's marker genes (smaller = types overlap more).
    batch_effect
        Standard deviation of the per-batch, per-gene log scaling factor.
    library_size
        Mean total counts per cell before the batch factor.
    dispersion
        Inverse dispersion θ of the negative binomial (smaller = noisier).
    seed
        Random seed: the same seed gives the same counts.

    Returns
    -------
    anndata.AnnData
        Sparse float32 counts in ``X``; ``obs['batch']`` (``batch0``, …), ``obs['cell_type']``
        (``type A``, …); ``uns['dataset']`` records the parameters and which types each batch holds.
    """
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    if n_batches < 2 or n_cell_types < 2:
        raise ValueError(f"simulated_batches needs n_batches ≥ 2 and n_cell_types ≥ 2 "
                         f"(got {n_batches}, {n_cell_types}).")
    if n_cells < 10 * n_batches or n_genes < 20:
        raise ValueError(f"simulated_batches needs n_cells ≥ {10 * n_batches} and n_genes ≥ 20 "
                         f"(got {n_cells}, {n_genes}).")
    if batch_effect < 0 or library_size <= 0 or dispersion <= 0:
        raise ValueError("batch_effect must be ≥ 0, library_size and dispersion > 0.")
    rng = np.random.default_rng(seed)
    types = [f"type {chr(65 + i)}" if i < 26 else f"type {i}" for i in range(n_cell_types)]
    batches = [f"batch{i}" for i in range(n_batches)]
    present = np.ones((n_batches, n_cell_types), dtype=bool)
    if n_cell_types >= 3:
        present[0, -1] = False                  # last type: absent from the first batch
        present[:, -2] = False                  # the one before: only in the second batch
        present[1, -2] = True
    # expression programmes: baseline + markers per type
    base = rng.normal(0.0, 1.2, n_genes)
    n_markers = max(2, n_genes // 20)
    log_mean = np.tile(base, (n_cell_types, 1))
    for t in range(n_cell_types):
        markers = rng.choice(n_genes, n_markers, replace=False)
        log_mean[t, markers] += rng.gamma(4.0, marker_strength / 4.0, n_markers)
    prop = np.exp(log_mean)
    prop /= prop.sum(axis=1, keepdims=True)
    gene_scale = np.exp(rng.normal(0.0, batch_effect, (n_batches, n_genes)))
    lib_factor = np.linspace(0.6, 1.6, n_batches)[rng.permutation(n_batches)]
    batch_of = np.sort(rng.integers(0, n_batches, n_cells))
    type_of = np.empty(n_cells, dtype=int)
    for b in range(n_batches):
        idx = np.flatnonzero(batch_of == b)
        type_of[idx] = rng.choice(np.flatnonzero(present[b]), idx.size)
    mean = prop[type_of] * gene_scale[batch_of]
    mean /= mean.sum(axis=1, keepdims=True)
    lib = library_size * lib_factor[batch_of] * np.exp(rng.normal(0.0, 0.3, n_cells))
    mean *= lib[:, None]
    counts = rng.poisson(rng.gamma(dispersion, mean / dispersion))
    obs = pd.DataFrame({"batch": pd.Categorical([batches[b] for b in batch_of], categories=batches),
                        "cell_type": pd.Categorical([types[t] for t in type_of], categories=types)},
                       index=[f"cell{i:05d}" for i in range(n_cells)])
    out = ad.AnnData(sp.csr_matrix(counts.astype("float32")), obs=obs,
                     var=pd.DataFrame(index=[f"gene{i:04d}" for i in range(n_genes)]))
    out.uns["dataset"] = {
        "name": "simulated_batches",
        "params": {"n_cells": n_cells, "n_genes": n_genes, "n_batches": n_batches, "n_cell_types": n_cell_types,
                   "batch_effect": batch_effect, "marker_strength": marker_strength, "library_size": library_size, "dispersion": dispersion,
                   "seed": seed},
        "types_per_batch": {batches[b]: [types[t] for t in np.flatnonzero(present[b])] for b in range(n_batches)},
    }
    return out
