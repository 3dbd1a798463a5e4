"""AnnData ↔ napari Points layers.

A cell table (AnnData) is shown as a Points layer of a 2-D embedding: one point per cell at
``obsm[key][:, dims]``, the ``obs`` columns as the layer's ``features``, coloured by one column.
The AnnData itself travels in ``layer.metadata["adata"]`` so that the panels can run steps on it
and write results back; ``layer.metadata["scnapse_session"]`` records the steps run, shared by
every layer that shows the same AnnData.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ..pipeline.session import ModelRef, Session  # noqa: F401 - where the panels find them

ADATA = "adata"
SESSION = "scnapse_session"
VIEW = "scnapse_view"


def embedding_keys(adata: AnnData) -> list[str]:
    """``obsm`` keys that hold at least two columns per cell (usable as 2-D coordinates)."""
    out = []
    for key in adata.obsm.keys():
        value = adata.obsm[key]
        if getattr(value, "ndim", 0) == 2 and value.shape[1] >= 2 and not isinstance(value, pd.DataFrame):
            out.append(key)
    return out


def default_embedding_key(adata: AnnData) -> str | None:
    keys = embedding_keys(adata)
    for preferred in ("X_umap", "X_tsne", "X_autoencoder", "X_pca"):
        if preferred in keys:
            return preferred
    return keys[0] if keys else None


def embedding_coords(adata: AnnData, key: str | None, dims: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Point coordinates (napari's row, column order) of ``obsm[key][:, dims]``: the embedding's
    second axis points up. ``key=None`` lays the cells out on a grid (no embedding yet)."""
    if key is None:
        side = int(np.ceil(np.sqrt(max(adata.n_obs, 1))))
        i = np.arange(adata.n_obs)
        return np.c_[i // side, i % side].astype(float)
    if key not in adata.obsm:
        raise KeyError(f"obsm[{key!r}] does not exist; embeddings here: {embedding_keys(adata)}.")
    emb = np.asarray(adata.obsm[key], dtype=float)
    if emb.ndim != 2 or emb.shape[1] < 2:
        raise ValueError(f"obsm[{key!r}] must have at least 2 columns to be drawn; it has shape {emb.shape}.")
    x, y = emb[:, dims[0]], emb[:, dims[1]]
    return np.c_[-y, x]


def _palette(n: int) -> list[str]:
    import matplotlib as mpl
    from matplotlib import colors as mcolors

    name = "tab10" if n <= 10 else "tab20"
    if n <= 20:
        cmap = mpl.colormaps[name]
        return [mcolors.to_hex(cmap(i)) for i in range(n)]
    cmap = mpl.colormaps["hsv"]
    return [mcolors.to_hex(cmap(i / n)) for i in range(n)]


#: the label of cells no class fits (see :func:`scnapse.tl.annotate`), always drawn grey
UNASSIGNED_LABEL = "Unassigned"
UNASSIGNED_COLOR = "#bbbbbb"


def _category_palette(adata: AnnData, column: str, categories: list[str]) -> list[str]:
    from matplotlib import colors as mcolors

    stored = adata.uns.get(f"{column}_colors")
    if stored is not None and len(stored) == len(categories):
        return [mcolors.to_hex(c) for c in stored]
    return _palette(len(categories))


def _truth_column(adata: AnnData, column: str, categories: list[str]) -> str | None:
    """The categorical column ``column`` predicts: another one that holds all of its classes
    (besides "Unassigned"), the one with the fewest extra classes."""
    classes = set(categories) - {UNASSIGNED_LABEL}
    if not classes or len(classes) == len(categories) and UNASSIGNED_LABEL not in categories \
            and f"{column}_confidence" not in adata.obs:
        return None
    best = None
    for other in adata.obs.columns:
        values = adata.obs[other]
        if other == column or not isinstance(values.dtype, pd.CategoricalDtype):
            continue
        cats = {str(c) for c in values.cat.categories} - {UNASSIGNED_LABEL}
        if classes <= cats and (best is None or len(cats) < best[0]):
            best = (len(cats), other)
    return None if best is None else best[1]


def cell_colors(adata: AnnData, column: str | None) -> tuple[np.ndarray, dict[str, str]]:
    """RGBA colour per cell for ``obs[column]`` and a legend ``{label: hex}``.

    Categories (and strings, booleans, few-valued integers) use ``uns[f"{column}_colors"]`` when
    scanpy has stored one of the right length, else tab10/tab20; numbers use viridis (the legend
    then gives the range).
    """
    from matplotlib import colors as mcolors
    import matplotlib as mpl

    n = adata.n_obs
    if column is None:
        return np.tile(mcolors.to_rgba("#7f7f7f"), (n, 1)), {}
    if column not in adata.obs:
        raise KeyError(f"obs[{column!r}] does not exist; columns: {list(adata.obs.columns)}.")
    values = adata.obs[column]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and not isinstance(values.dtype, pd.CategoricalDtype):
        v = values.to_numpy(dtype=float)
        finite = np.isfinite(v)
        lo, hi = (float(np.min(v[finite])), float(np.max(v[finite]))) if finite.any() else (0.0, 1.0)
        norm = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        rgba = mpl.colormaps["viridis"](np.nan_to_num(norm, nan=0.0))
        rgba[~finite] = mcolors.to_rgba("#bbbbbb")
        return rgba, {f"{lo:.3g}": mcolors.to_hex(rgba[np.argmin(np.where(finite, v, np.inf))]) if finite.any()
                      else "#bbbbbb",
                      f"{hi:.3g}": mcolors.to_hex(mpl.colormaps["viridis"](1.0))}
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype(str).astype("category")
    categories = [str(c) for c in cat.cat.categories]
    palette = _category_palette(adata, column, categories)
    truth = _truth_column(adata, column, categories)
    if truth is not None:  # a predicted column: the colours of the column it predicts
        named = dict(zip([str(c) for c in adata.obs[truth].cat.categories],
                         _category_palette(adata, truth, [str(c) for c in adata.obs[truth].cat.categories])))
        palette = [named.get(c, p) for c, p in zip(categories, palette)]
    palette = [UNASSIGNED_COLOR if c == UNASSIGNED_LABEL else p for c, p in zip(categories, palette)]
    lut = np.array([mcolors.to_rgba(c) for c in palette] + [mcolors.to_rgba("#bbbbbb")])
    codes = cat.cat.codes.to_numpy().copy()
    codes[codes < 0] = len(categories)  # missing values: grey
    return lut[codes], dict(zip(categories, palette))


def features_of(adata: AnnData) -> pd.DataFrame:
    """``obs`` as a layer's features (index reset: napari wants one row per point)."""
    return adata.obs.reset_index(drop=True).copy()


def point_size(coords: np.ndarray) -> float:
    if len(coords) == 0:
        return 1.0
    extent = float(np.max(np.ptp(coords, axis=0))) if len(coords) > 1 else 1.0
    return max(extent / 40.0, 1e-6)


def adata_layer_data(
    adata: AnnData,
    *,
    obsm_key: str | None = "auto",
    color_by: str | None = "auto",
    name: str | None = None,
    session: Session | None = None,
    dims: tuple[int, int] = (0, 1),
    features: pd.DataFrame | None = None,
) -> tuple:
    """A napari ``LayerDataTuple`` ``(coords, kwargs, "points")`` showing ``adata``.

    Parameters
    ----------
    adata
        The cells. Kept (not copied) in the layer's ``metadata["adata"]``.
    obsm_key
        Embedding to draw; ``"auto"``: ``X_umap``, ``X_tsne``, ``X_autoencoder``, ``X_pca`` or the
        first 2-D ``obsm`` entry; ``None`` (or none found): cells on a grid until an embedding exists.
    color_by
        ``obs`` column to colour by; ``"auto"``: the first categorical column.
    name
        Layer name; default ``"cells (KEY)"``.
    session
        The record of steps shared with other layers of the same AnnData.
    dims
        Which two embedding dimensions to draw.
    features
        ``features_of(adata)`` when already made (e.g. in a worker thread); ``None``: made here.
    """
    if obsm_key == "auto":
        obsm_key = default_embedding_key(adata)
    if color_by == "auto":
        cats = [c for c in adata.obs.columns if isinstance(adata.obs[c].dtype, pd.CategoricalDtype)]
        color_by = cats[0] if cats else None
    coords = embedding_coords(adata, obsm_key, dims)
    rgba, legend = cell_colors(adata, color_by)
    kwargs = {
        "name": name or f"cells ({obsm_key or 'no embedding'})",
        "features": features_of(adata) if features is None else features,
        "face_color": rgba,
        "border_width": 0,
        "size": point_size(coords),
        "metadata": {
            ADATA: adata,
            SESSION: session if session is not None else Session(),
            VIEW: {"obsm_key": obsm_key, "color_by": color_by, "dims": tuple(dims), "legend": legend},
        },
    }
    return coords, kwargs, "points"


def _is_points(layer) -> bool:
    return type(layer).__name__ == "Points"


def is_adata_layer(layer) -> bool:
    return isinstance(getattr(layer, "metadata", None), dict) and isinstance(layer.metadata.get(ADATA), AnnData)


def get_adata(layer) -> AnnData:
    """The AnnData shown by ``layer``; a clear error for layers that do not carry one."""
    if layer is None:
        raise ValueError("No cells selected: open an .h5ad file (File ▸ Open) or a sample "
                         "(File ▸ Open Sample ▸ scnapse), then pick its Points layer.")
    if not is_adata_layer(layer):
        raise ValueError(f"Layer {layer.name!r} holds no AnnData; pick a Points layer opened from an "
                         ".h5ad file or made by a scnapse panel.")
    return layer.metadata[ADATA]


def recolor(layer, color_by: str | None) -> dict[str, str]:
    """Colour ``layer``'s points by ``obs[color_by]``; returns the legend."""
    adata = get_adata(layer)
    rgba, legend = cell_colors(adata, color_by)
    layer.face_color = rgba
    layer.metadata[VIEW] = {**layer.metadata.get(VIEW, {}), "color_by": color_by, "legend": legend}
    layer.refresh()
    return legend


def refresh_features(viewer, adata: AnnData, features: pd.DataFrame | None = None) -> None:
    """After a step wrote new ``obs`` columns: update ``features`` of every layer of ``adata``
    (``features``: ``features_of(adata)`` when already made, e.g. in a worker thread)."""
    for layer in viewer.layers:
        if _is_points(layer) and is_adata_layer(layer) and layer.metadata[ADATA] is adata:
            # one point per cell (not a Labels / Tracks layer); napari copies the table it is given
            layer.features = features_of(adata) if features is None else features


@dataclass(frozen=True)
class PreparedEmbedding:
    """What :func:`show_embedding` puts in a layer (coordinates, colours, features, legend), made
    beforehand by :func:`prepare_embedding` — in a worker thread, so that the GUI thread only hands
    it to napari."""

    adata: AnnData
    obsm_key: str
    color_by: str | None
    dims: tuple[int, int]
    data: np.ndarray
    kwargs: dict


def prepare_embedding(source_layer, obsm_key: str, *, color_by: str | None = "same",
                      dims: tuple[int, int] = (0, 1)):
    """A function ``make(features=None) -> PreparedEmbedding`` for :func:`show_embedding`'s
    ``prepared=``. Call this on the GUI thread (it reads the layer); ``make`` reads only the
    AnnData and may run in a worker thread, once the embedding exists."""
    adata = get_adata(source_layer)
    meta = source_layer.metadata
    if color_by == "same":
        color_by = meta.get(VIEW, {}).get("color_by")
    session, dims = meta[SESSION], tuple(dims)
    name = f"{source_layer.name.split(' (')[0]} ({obsm_key})"

    def make(features: pd.DataFrame | None = None) -> PreparedEmbedding:
        data, kwargs, _ = adata_layer_data(adata, obsm_key=obsm_key, color_by=color_by, session=session,
                                           dims=dims, name=name, features=features)
        return PreparedEmbedding(adata, obsm_key, color_by, dims, data, kwargs)

    return make


def show_embedding(viewer, source_layer, obsm_key: str, *, color_by: str | None = "same",
                   dims: tuple[int, int] = (0, 1), prepared: PreparedEmbedding | None = None,
                   focus: bool = True):
    """Add (or update) the Points layer of ``obsm[obsm_key]`` for the AnnData of ``source_layer``,
    sharing its AnnData and session, and show it alone among the layers of that AnnData (see
    :func:`focus_layer`). Returns the layer.

    A layer that already shows this embedding (or a placeholder grid) of the same AnnData is
    updated in place: far quicker than napari making a new layer. ``prepared``: the layer's
    contents made beforehand by :func:`prepare_embedding` (used when it matches the arguments).
    ``focus=False``: a new layer is added hidden and the view is left as it is; call
    :func:`focus_layer` later (napari draws a new layer for the first time when it is shown: two
    shorter pauses instead of one long one).
    """
    adata = get_adata(source_layer)
    if color_by == "same":
        color_by = source_layer.metadata.get(VIEW, {}).get("color_by")
    for layer in viewer.layers:
        if not _is_points(layer):
            continue
        if (is_adata_layer(layer) and layer.metadata[ADATA] is adata
                and layer.metadata.get(VIEW, {}).get("obsm_key") is None):
            target = layer  # a placeholder grid layer: give it the embedding
            break
        if (is_adata_layer(layer) and layer.metadata[ADATA] is adata
                and layer.metadata.get(VIEW, {}).get("obsm_key") == obsm_key):
            target = layer
            break
    else:
        target = None
    if prepared is None or prepared.adata is not adata \
            or (prepared.obsm_key, prepared.color_by, prepared.dims) != (obsm_key, color_by, tuple(dims)):
        prepared = prepare_embedding(source_layer, obsm_key, color_by=color_by, dims=dims)()
    data, kwargs = prepared.data, prepared.kwargs
    if target is None:
        target = viewer.add_points(data, **kwargs, visible=focus)
    else:
        target.data = data
        target.features = kwargs["features"]
        target.face_color = kwargs["face_color"]
        target.size = kwargs["size"]
        target.metadata.update(kwargs["metadata"])
        target.name = kwargs["name"]
        target.refresh()
    if focus:
        focus_layer(viewer, target)
    return target


def focus_layer(viewer, layer) -> None:
    """Show ``layer`` alone among the layers of its AnnData (the others stay, hidden), select it
    and fit the view to it."""
    adata = get_adata(layer)
    for other in viewer.layers:
        if other is not layer and _is_points(other) and is_adata_layer(other) and other.metadata[ADATA] is adata:
            other.visible = False
    layer.visible = True
    viewer.layers.selection.active = layer
    try:
        viewer.reset_view(layers=[layer])
    except IndexError:  # napari cannot fit one 2-D layer among layers of more dimensions
        viewer.reset_view()
