"""The scatter view: an embedding (``obsm``) of the cells, image objects or tracks in a plot of its
own, coloured by any ``obs`` column with a legend, linked to the main view.

Selecting points in the plot (lasso or rectangle) highlights the same objects in the main view —
the points of every cells layer of the same AnnData, the objects of its Labels layer, the tracks of
its Tracks layer — and selecting there (points selected, a label picked, a track clicked)
highlights them here.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, LineEdit
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ._layers import ADATA, VIEW, cell_colors, embedding_keys, is_adata_layer

#: name of the dock widget the panels open
DOCK_NAME = "scnapse scatter"
#: suffix of the layer that shows the selected objects of a Labels or Tracks layer
SELECTION_SUFFIX = " (selected)"
LASSO, RECTANGLE = "lasso", "rectangle"
HIGHLIGHT = "#ffd700"
_VIEWS: dict[int, "ScatterView"] = {}


def linked_source_layers(viewer) -> list[tuple[str, object]]:
    """``(name, layer)`` of the layers whose AnnData has an embedding to plot (cells Points layers,
    Labels layers of image cells, Tracks layers of sequences)."""
    out = []
    for layer in viewer.layers:
        if layer.name.endswith(SELECTION_SUFFIX) or not is_adata_layer(layer):
            continue
        if embedding_keys(layer.metadata[ADATA]):
            out.append((layer.name, layer))
    return out


def _kind(layer) -> str:
    return type(layer).__name__


def _short(label, chars: int = 24) -> str:
    label = str(label)
    return label if len(label) <= chars else label[: chars - 1] + "…"


def _legend_entries(legend: dict[str, str], limit: int = 25) -> list[tuple[str, str]]:
    items = list(legend.items())
    if len(items) > limit:
        items = items[: limit - 1] + [(f"… {len(legend) - limit + 1} more", "#ffffff")]
    return items


class ScatterView(QWidget):
    """An embedding of a layer's AnnData as a scatter plot, linked to the main view.

    ``source`` picks the layer (its AnnData), ``embedding`` the ``obsm`` key, ``dimensions`` the two
    columns drawn, ``colour by`` the ``obs`` column (legend on the plot), ``select with`` the lasso
    or the rectangle. :attr:`selected` holds the selected rows (positions in ``obs``).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.source = ComboBox(label="source", choices=lambda *_: linked_source_layers(self.viewer), nullable=True,
                               tooltip="The layer whose objects (cells, image objects, tracks) are plotted.")
        self.embedding = ComboBox(label="embedding (obsm)", choices=[],
                                  tooltip="The embedding drawn: an obsm entry with two or more columns.")
        self.dims = LineEdit(label="dimensions", value="0, 1", tooltip="The two embedding columns drawn (x, y).")
        self.color_by = ComboBox(label="colour by (obs)", choices=[], nullable=True,
                                 tooltip="The obs column that colours the points; its legend is on the plot.")
        self.tool = ComboBox(label="select with", choices=[LASSO, RECTANGLE], value=LASSO,
                             tooltip="Drag on the plot to select points; the same objects light up in the viewer.")
        self.form = Container(widgets=[self.source, self.embedding, self.dims, self.color_by, self.tool],
                              labels=True)
        self.figure = Figure(figsize=(4, 3.6), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.canvas.setMinimumSize(260, 260)
        self.ax = self.figure.add_subplot(111)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.status)
        self.selected = np.zeros(0, dtype=int)
        self.legend: dict[str, str] = {}
        self.xy = np.zeros((0, 2))
        self._rgba = np.zeros((0, 4))
        self._points = None
        self._selector = None
        self._updating = False
        self._syncing = False
        self._watched: list[tuple[object, object]] = []
        self.source.changed.connect(self._on_source)
        self.embedding.changed.connect(self.redraw)
        self.dims.native.editingFinished.connect(self.redraw)
        self.color_by.changed.connect(self.redraw)
        self.tool.changed.connect(self._make_selector)
        from ._events import _connect_layer_events

        _connect_layer_events(self, self._refresh)
        _VIEWS[id(napari_viewer)] = self
        key = id(napari_viewer)
        self.destroyed.connect(lambda *_: _VIEWS.pop(key, None))
        self._refresh()

    # -- what is shown -------------------------------------------------------------------------------
    @property
    def adata(self):
        layer = self.source.value
        return None if layer is None else layer.metadata.get(ADATA)

    def _refresh(self, *_):
        current = self.source.value
        self.source.reset_choices()
        layers = [c for c in self.source.choices if c is not None]
        if current not in layers:
            self.source.value = layers[-1] if layers else None
        self._on_source()

    def _on_source(self, *_):
        adata = self.adata
        self._updating = True
        try:
            if adata is None:
                self.embedding.choices, self.color_by.choices = [], []
            else:
                keep_e, keep_c = self.embedding.value, self.color_by.value
                self.embedding.choices = embedding_keys(adata)
                if keep_e in self.embedding.choices:
                    self.embedding.value = keep_e
                self.color_by.choices = list(adata.obs.columns)
                view = self.source.value.metadata.get(VIEW, {})
                if keep_c in adata.obs:
                    self.color_by.value = keep_c
                elif view.get("color_by") in adata.obs:
                    self.color_by.value = view["color_by"]
        finally:
            self._updating = False
        self._watch()
        self.redraw()

    def show(self, layer=None, obsm_key: str | None = None, color_by: str | None = "keep") -> "ScatterView":
        """Plot ``obsm[obsm_key]`` of ``layer``'s AnnData coloured by ``obs[color_by]`` (``"keep"``:
        the current choice). Returns the view."""
        self._updating = True
        try:
            if layer is not None:
                self.source.reset_choices()
                self.source.value = layer
        finally:
            self._updating = False
        self._on_source()
        self._updating = True
        try:
            if obsm_key is not None:
                if obsm_key not in self.embedding.choices:
                    raise KeyError(f"obsm[{obsm_key!r}] is not an embedding of {layer.name!r}; "
                                   f"embeddings: {list(self.embedding.choices)}.")
                self.embedding.value = obsm_key
            if color_by != "keep":
                self.color_by.value = color_by
        finally:
            self._updating = False
        self.redraw()
        return self

    def _dims(self) -> tuple[int, int]:
        try:
            dims = tuple(int(d) for d in str(self.dims.value).replace(",", " ").split())
        except ValueError:
            dims = ()
        if len(dims) != 2:
            raise ValueError("dimensions: give two column numbers, e.g. '0, 1'.")
        return dims

    def redraw(self, *_):
        """Draw the plot again (embedding, colours, legend, selection)."""
        if self._updating:
            return
        from matplotlib.lines import Line2D

        self.ax.clear()
        adata, key = self.adata, self.embedding.value
        self._points = None
        if adata is None or not key or key not in adata.obsm:
            self.xy = np.zeros((0, 2))
            self.ax.set_axis_off()
            self.ax.text(0.5, 0.5, "no embedding yet:\nrun a step that embeds\n(Autoencoder, Image model, "
                         "Time course, Classic)", ha="center", va="center", fontsize=8, color="#777777",
                         transform=self.ax.transAxes)
            self.legend = {}
            self.status.setText("")
            self.canvas.draw_idle()
            return
        try:
            dims = self._dims()
            emb = np.asarray(adata.obsm[key], dtype=float)
            if max(dims) >= emb.shape[1] or min(dims) < 0:
                raise ValueError(f"dimensions: obsm[{key!r}] has columns 0–{emb.shape[1] - 1}.")
        except ValueError as err:
            from napari.utils.notifications import show_error

            show_error(f"scnapse: {err}")
            return
        self.xy = emb[:, list(dims)]
        if len(self.selected) and self.selected.max() >= len(self.xy):
            self.selected = np.zeros(0, dtype=int)
        self._rgba, self.legend = cell_colors(adata, self.color_by.value)
        size = float(np.clip(6000.0 / max(len(self.xy), 1), 6, 40))
        self._points = self.ax.scatter(self.xy[:, 0], self.xy[:, 1], s=size, c=self._rgba, linewidths=0)
        self.ax.set_xlabel(f"{key} {dims[0]}", fontsize=8)
        self.ax.set_ylabel(f"{key} {dims[1]}", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.ax.set_title(self.source.value.name, fontsize=8)
        if self.legend:
            entries = _legend_entries(self.legend)
            handles = [Line2D([], [], marker="o", linestyle="", markersize=6, markerfacecolor=c,
                              markeredgewidth=0, label=_short(k)) for k, c in entries]
            ncol = 1 if len(entries) <= 3 else 2
            rows = -(-len(entries) // ncol)
            bottom = min(0.12 + 0.032 * (rows + 2), 0.5)
            self.ax.legend(handles=handles, title=str(self.color_by.value), fontsize=7, title_fontsize=7,
                           loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=ncol, frameon=False,
                           borderaxespad=0, handletextpad=0.2, columnspacing=0.8)
            self.figure.subplots_adjust(left=0.16, right=0.96, bottom=bottom, top=0.93)
        else:
            self.figure.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.93)
        self._make_selector()
        self._paint_selection()

    # -- selection -----------------------------------------------------------------------------------
    def _make_selector(self, *_):
        from matplotlib.widgets import LassoSelector, RectangleSelector

        if self._selector is not None:
            self._selector.set_active(False)
            self._selector = None
        if self._points is None:
            return
        if self.tool.value == RECTANGLE:
            self._selector = RectangleSelector(self.ax, self._on_rectangle, useblit=False, button=[1],
                                               props={"facecolor": HIGHLIGHT, "alpha": 0.2, "fill": True})
        else:
            self._selector = LassoSelector(self.ax, self._on_lasso, useblit=False, button=[1],
                                           props={"color": "#444444", "linewidth": 1})

    def _on_lasso(self, vertices) -> None:
        from matplotlib.path import Path

        if len(vertices) < 3:
            self.select([])
            return
        inside = Path(np.asarray(vertices)).contains_points(self.xy)
        self.select(np.flatnonzero(inside))

    def _on_rectangle(self, press, release) -> None:
        x0, x1 = sorted((press.xdata, release.xdata))
        y0, y1 = sorted((press.ydata, release.ydata))
        self.select_box((x0, x1), (y0, y1))

    def select_box(self, xrange: tuple[float, float], yrange: tuple[float, float]) -> np.ndarray:
        """Select the points inside a rectangle of the plot's coordinates; returns their rows."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        inside = (x >= xrange[0]) & (x <= xrange[1]) & (y >= yrange[0]) & (y <= yrange[1])
        return self.select(np.flatnonzero(inside))

    def select(self, rows, *, from_viewer: bool = False) -> np.ndarray:
        """Select ``rows`` (positions in ``obs``): highlighted here and in the main view."""
        self.selected = np.unique(np.asarray(list(rows), dtype=int))
        self._paint_selection()
        if not from_viewer:
            self._syncing = True
            try:
                self._highlight_viewer()
            finally:
                self._syncing = False
        n = len(self.selected)
        self.status.setText(f"{n} selected" + (" — the same objects are highlighted in the viewer." if n else ""))
        return self.selected

    def _paint_selection(self) -> None:
        if self._points is None:
            return
        n = len(self.xy)
        face = self._rgba.copy()
        edge = np.zeros((n, 4))
        widths = np.zeros(n)
        if len(self.selected):
            face[:, 3] = 0.25
            face[self.selected, 3] = 1.0
            edge[self.selected] = (0.1, 0.1, 0.1, 1)
            widths[self.selected] = 0.4
        self._points.set_facecolors(face)
        self._points.set_edgecolors(edge)
        self._points.set_linewidths(widths)
        self.canvas.draw_idle()

    # -- the main view -------------------------------------------------------------------------------
    def linked_layers(self) -> list:
        """The main view's layers that show the plotted AnnData."""
        adata = self.adata
        if adata is None:
            return []
        return [layer for layer in self.viewer.layers
                if not layer.name.endswith(SELECTION_SUFFIX) and layer.metadata.get(ADATA) is adata]

    def _highlight_viewer(self) -> None:
        adata = self.adata
        for layer in self.linked_layers():
            kind = _kind(layer)
            if kind == "Points" and len(layer.data) == adata.n_obs:
                layer.selected_data = {int(i) for i in self.selected}
                width = np.zeros(len(layer.data))
                width[self.selected] = 0.25
                layer.border_color = HIGHLIGHT
                layer.border_width = width
                layer.refresh()
            elif kind == "Labels" and "label" in adata.obs:
                ids = adata.obs["label"].to_numpy()[self.selected]
                self._selection_layer(layer, np.isin(np.asarray(layer.data), ids), "Labels")
            elif kind == "Tracks" and "track_id" in adata.obs:
                ids = adata.obs["track_id"].to_numpy()[self.selected]
                rows = np.isin(np.asarray(layer.data)[:, 0], ids)
                self._selection_layer(layer, rows, "Tracks")

    def _selection_layer(self, layer, mask: np.ndarray, kind: str) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        name = layer.name + SELECTION_SUFFIX
        existing = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if not mask.any():
            if existing is not None:
                self.viewer.layers.remove(existing)
            return
        if kind == "Labels":
            data = np.where(mask, 1, 0).astype(np.uint8)
            if existing is not None:
                existing.data = data
            else:
                self.viewer.add_labels(data, name=name, scale=layer.scale, translate=layer.translate, opacity=0.9,
                                       colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                                                                1: HIGHLIGHT}))
                self.viewer.layers[name].contour = 2
        else:
            data = np.asarray(layer.data)[mask]
            if existing is not None:
                existing.data = data
            else:
                self.viewer.add_tracks(data, name=name, scale=layer.scale, translate=layer.translate,
                                       tail_width=6, colormap="hsv", blending="translucent")
        self.viewer.layers.selection.active = layer

    def _watch(self) -> None:
        """Listen to selections in the main view (points selected, a label picked)."""
        for emitter, callback in self._watched:
            emitter.disconnect(callback)
        self._watched = []
        for layer in self.linked_layers():
            kind = _kind(layer)
            if kind == "Points":
                emitter = layer.selected_data.events.items_changed
                callback = self._points_selected(layer)
            elif kind == "Labels":
                emitter = layer.events.selected_label
                callback = self._label_picked(layer)
            elif kind == "Tracks":
                emitter = _CallbackList(layer.mouse_drag_callbacks)
                callback = self._track_clicked(layer)
            else:
                continue
            emitter.connect(callback)
            self._watched.append((emitter, callback))

    def _points_selected(self, layer):
        def callback(*_):
            if self._syncing or len(layer.data) != len(self.xy):
                return
            self.select(sorted(layer.selected_data), from_viewer=True)
        return callback

    def _track_clicked(self, layer):
        def callback(_layer, event):
            dragged = False
            yield
            while event.type == "mouse_move":
                dragged = True
                yield
            if not dragged:
                self.select_track(layer, nearest_track(layer, event.position))
        return callback

    def select_track(self, layer, track_id) -> np.ndarray:
        """Select the point of ``track_id`` (a click on a track in the viewer); ``None``: nothing."""
        adata = self.adata
        if adata is None or "track_id" not in adata.obs:
            return self.selected
        rows = [] if track_id is None else np.flatnonzero(adata.obs["track_id"].to_numpy() == track_id)
        return self.select(rows)

    def _label_picked(self, layer):
        def callback(*_):
            adata = self.adata
            if self._syncing or adata is None or "label" not in adata.obs:
                return
            rows = np.flatnonzero(adata.obs["label"].to_numpy() == layer.selected_label)
            self.select(rows, from_viewer=True)
        return callback


class _CallbackList:
    """A layer's list of mouse callbacks, with the connect / disconnect of an event emitter."""

    def __init__(self, callbacks: list):
        self.callbacks = callbacks

    def connect(self, callback) -> None:
        self.callbacks.append(callback)

    def disconnect(self, callback) -> None:
        if callback in self.callbacks:
            self.callbacks.remove(callback)


def nearest_track(layer, position, radius: float | None = None):
    """The id of the track of a Tracks layer nearest to ``position`` (world coordinates: time
    first) at that time point, or ``None`` when none is within ``radius`` (default: a twentieth
    of the tracks' extent)."""
    data = np.asarray(layer.data, dtype=float)
    if len(data) == 0:
        return None
    pos = np.asarray(layer.world_to_data(position), dtype=float)[-(data.shape[1] - 1):]
    rows = data[np.round(data[:, 1]) == np.round(pos[0])]
    if len(rows) == 0:
        return None
    dist = np.linalg.norm(rows[:, 2:] - pos[1:], axis=1)
    if radius is None:
        radius = max(float(np.max(np.ptp(data[:, 2:], axis=0))) / 20.0, 1e-9)
    i = int(np.argmin(dist))
    return rows[i, 0] if dist[i] <= radius else None


def _view_of(viewer) -> ScatterView | None:
    view = _VIEWS.get(id(viewer))
    if view is None:
        return None
    try:
        view.objectName()  # a view whose widget Qt has deleted, or of a closed viewer
        alive = view.viewer is viewer
    except RuntimeError:
        alive = False
    return view if alive else None


def refresh_scatter(viewer) -> None:
    """Draw the viewer's scatter view again, if it has one (after a step wrote new results)."""
    view = _view_of(viewer)
    if view is not None:
        view._on_source()


def open_scatter(viewer, layer, obsm_key: str, *, color_by: str | None = "keep") -> ScatterView:
    """Show ``obsm[obsm_key]`` of ``layer``'s AnnData in the viewer's scatter view (docked on the
    right, made if absent).

    Parameters
    ----------
    viewer
        The napari viewer.
    layer
        A layer carrying an AnnData (cells Points, image-object Labels, Tracks).
    obsm_key
        The embedding to plot.
    color_by
        The ``obs`` column colouring the points; ``"keep"``: the view's current choice.

    Returns
    -------
    ScatterView
        The view (``view.selected``: the selected rows of ``obs``).
    """
    view = _view_of(viewer)
    if view is None:
        view = ScatterView(viewer)
        window = getattr(viewer, "window", None)
        if window is not None:
            window.add_dock_widget(view, name=DOCK_NAME, area="right")
    return view.show(layer, obsm_key, color_by=color_by)

