"""Predictions back onto the label image: a label → class table, colours, and a class image.

Pure NumPy / pandas (no napari): the napari panel turns the table into ``layer.features`` and the
colours into a ``DirectLabelColormap``; scripts can use :func:`paint_classes` to get an image of
class codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import renamed_adata

#: a categorical palette (matplotlib's tab20 order, strong colours first), as hex
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
UNCLASSIFIED = "#808080"


def hex_to_rgba(color: str, alpha: float = 1.0) -> np.ndarray:
    """``"#rrggbb"`` (or ``"#rrggbbaa"``) as a float RGBA array in [0, 1]."""
    h = str(color).lstrip("#")
    if len(h) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise ValueError(f"{color!r} is not a hex colour like '#1f77b4'.")
    vals = [int(h[i : i + 2], 16) / 255 for i in range(0, len(h), 2)]
    if len(vals) == 3:
        vals.append(alpha)
    return np.asarray(vals, dtype=np.float32)


@renamed_adata("cells")
def class_table(
    adata: AnnData,
    key: str = "predicted",
    *,
    frame: int | None = None,
    palette: dict | list | None = None,
) -> pd.DataFrame:
    """The per-object table to paint ``obs[key]`` back on the Labels layer.

    Parameters
    ----------
    adata
        The AnnData of :func:`scnapse.im.cells_from_labels` (formerly ``cells=``), with ``obs[key]``
        (e.g. written by :func:`scnapse.tl.annotate_images`, or a user's annotation column).
    key
        The ``obs`` column holding the classes (default ``"predicted"``, what
        :func:`scnapse.tl.annotate_images` writes by default).
    frame
        For a time-lapse: the frame to paint (label ids are per frame). Required when
        ``obs["frame"]`` exists.
    palette
        Colours per class: a dict ``{class: "#rrggbb"}`` or a list in category order. ``None``:
        ``uns[f"{key}_colors"]`` (scanpy's convention) when present, else a tab20-like palette.

    Returns
    -------
    pd.DataFrame
        A DataFrame indexed by label id with columns ``label``, ``class`` (the category, ``NaN`` for
        unclassified), ``class_id`` (1-based category code; 0 = unclassified), ``color`` (hex), the
        ``<key>_confidence`` column when present, and ``frame`` for a time-lapse. ``table.attrs``
        holds ``categories`` and ``colors`` (category → hex).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    cells = adata
    if key not in cells.obs:
        raise KeyError(
            f"obs[{key!r}] does not exist; columns: {list(cells.obs.columns)}. Run "
            "sn.tl.annotate_images(cells, model) first or name another column with key=."
        )
    if "label" not in cells.obs:
        raise KeyError("obs['label'] is missing: give the AnnData made by sn.im.cells_from_labels.")
    obs = cells.obs
    if "frame" in obs:
        if frame is None:
            raise ValueError(
                f"These cells come from a time-lapse ({obs['frame'].nunique()} frames) and label ids are "
                "per frame: pass frame= to choose the frame to paint."
            )
        obs = obs[obs["frame"].to_numpy() == frame]
        if obs.empty:
            raise ValueError(f"frame={frame!r} has no objects; frames present: {sorted(cells.obs['frame'].unique())}.")
    values = obs[key]
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.cat
        categories = list(cat.categories)
        codes = cat.codes.to_numpy()
    else:
        categories = sorted(pd.unique(values.dropna()), key=str)
        codes = pd.Categorical(values, categories=categories).codes
    colors = _palette_for(cells, key, categories, palette)
    table = pd.DataFrame({
        "label": obs["label"].to_numpy(dtype=np.int64),
        "class": values.to_numpy(dtype=object),
        "class_id": (codes + 1).astype(np.int32),
        "color": [colors[categories[c]] if c >= 0 else UNCLASSIFIED for c in codes],
    })
    conf = f"{key}_confidence"
    if conf in obs:
        table[conf] = obs[conf].to_numpy()
    if "frame" in obs:
        table["frame"] = obs["frame"].to_numpy()
    table.index = pd.Index(table["label"].to_numpy(), name="label_id")
    table.attrs["categories"] = [str(c) for c in categories]
    table.attrs["colors"] = {str(c): colors[c] for c in categories}
    return table


@renamed_adata("cells")
def label_features(
    adata: AnnData,
    *,
    obs_keys: list[str] | None = None,
    obsm_keys: list[str] | None = None,
    frame: int | None = None,
) -> pd.DataFrame:
    """Per-object columns keyed by label id, for a Labels layer's ``features`` table.

    Parameters
    ----------
    adata
        The AnnData of :func:`scnapse.im.cells_from_labels` (formerly ``cells=``).
    obs_keys
        ``obs`` columns to include (default: all of them).
    obsm_keys
        Embeddings or probabilities to include, one column per dimension (``X_cnn_0``,
        ``X_cnn_1``…); default: every 2-D ``obsm`` entry except ``spatial``.
    frame
        For a time-lapse, the frame whose objects to return (required then).

    Returns
    -------
    pd.DataFrame
        A DataFrame with a ``label`` column first (and indexed by label id), then the chosen columns.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    cells = adata
    if "label" not in cells.obs:
        raise KeyError("obs['label'] is missing: give the AnnData made by sn.im.cells_from_labels.")
    rows = np.ones(cells.n_obs, dtype=bool)
    if "frame" in cells.obs:
        if frame is None:
            raise ValueError("These cells come from a time-lapse: pass frame= (label ids are per frame).")
        rows = cells.obs["frame"].to_numpy() == frame
    obs_keys = list(cells.obs.columns) if obs_keys is None else list(obs_keys)
    missing = [k for k in obs_keys if k not in cells.obs]
    if missing:
        raise KeyError(f"obs has no column(s) {missing}; columns: {list(cells.obs.columns)}.")
    if obsm_keys is None:
        obsm_keys = [k for k, v in cells.obsm.items() if k != "spatial" and getattr(v, "ndim", 0) == 2]
    table = cells.obs.loc[rows, [k for k in obs_keys if k != "label"]].copy()
    table.insert(0, "label", cells.obs.loc[rows, "label"].to_numpy(dtype=np.int64))
    for key in obsm_keys:
        if key not in cells.obsm:
            raise KeyError(f"obsm has no {key!r}; keys: {list(cells.obsm.keys())}.")
        values = np.asarray(cells.obsm[key])
        if values.ndim != 2:
            raise ValueError(f"obsm[{key!r}] is not a 2-D table (shape {values.shape}); crops cannot be features.")
        for j in range(values.shape[1]):
            table[f"{key}_{j}"] = values[rows, j]
    table.index = pd.Index(table["label"].to_numpy(), name="label_id")
    return table


def _palette_for(cells, key, categories, palette) -> dict:
    if palette is None:
        stored = cells.uns.get(f"{key}_colors")
        if stored is not None and len(stored) >= len(categories):
            palette = list(stored)
        else:
            palette = [PALETTE[i % len(PALETTE)] for i in range(len(categories))]
    if isinstance(palette, dict):
        missing = [c for c in categories if c not in palette]
        if missing:
            raise ValueError(f"palette has no colour for class(es) {missing}.")
        out = {c: palette[c] for c in categories}
    else:
        palette = list(palette)
        if len(palette) < len(categories):
            raise ValueError(f"palette has {len(palette)} colours for {len(categories)} classes.")
        out = dict(zip(categories, palette))
    for c, v in out.items():
        hex_to_rgba(v)  # checks the format
    return out


def label_colors(table: pd.DataFrame, *, background_alpha: float = 0.0) -> dict:
    """Colours per label id, for a napari ``DirectLabelColormap(color_dict=...)``.

    Parameters
    ----------
    table
        A class table from :func:`class_table` (label id → class, colour).
    background_alpha
        Opacity of label 0 and of every label not in the table (the ``None`` key).

    Returns
    -------
    dict
        ``{label id: RGBA array}``, with ``0`` and ``None`` set to the background colour.
    """
    out: dict = {None: np.array([0, 0, 0, background_alpha], dtype=np.float32),
                 0: np.array([0, 0, 0, background_alpha], dtype=np.float32)}
    for label, color in zip(table["label"].to_numpy(), table["color"].to_numpy()):
        out[int(label)] = hex_to_rgba(color)
    return out


def paint_classes(labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """An image of class codes: each object's pixels get its ``class_id``.

    Parameters
    ----------
    labels
        The (2-D or 3-D) label image of the frame the table describes.
    table
        A class table from :func:`class_table`.

    Returns
    -------
    numpy.ndarray
        Same shape as ``labels``; 0 is background or unclassified, 1… the classes in table order.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels holds {labels.dtype} values; give the integer label image.")
    top = int(max(labels.max(initial=0), table["label"].max() if len(table) else 0))
    lut = np.zeros(top + 1, dtype=np.int32)
    lut[table["label"].to_numpy()] = table["class_id"].to_numpy()
    return lut[labels]
