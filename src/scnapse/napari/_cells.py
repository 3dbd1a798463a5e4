"""The Cells panel: which embedding of the AnnData a Points layer shows, which ``obs`` column
colours it, and the legend of that colouring."""

from __future__ import annotations

import html

import napari
from magicgui.widgets import ComboBox, Container, LineEdit
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ._events import _connect_layer_events, adata_points_layers, refresh_cells_choice
from ._layers import VIEW, embedding_keys, get_adata, recolor, show_embedding


def legend_html(legend: dict[str, str], column: str | None) -> str:
    if not legend:
        return "<i>no colouring</i>"
    rows = "".join(
        f"<tr><td style='background:{c}; width:14px'>&nbsp;</td><td>&nbsp;{html.escape(str(k))}</td></tr>"
        for k, c in legend.items()
    )
    return f"<b>{html.escape(str(column))}</b><table cellspacing='2'>{rows}</table>"


class CellsWidget(QWidget):
    """Which embedding of the AnnData the Points layer shows, which ``obs`` column colours it, and
    the legend of that colouring."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.cells = ComboBox(label="cells", choices=self._adata_layers, nullable=True)
        self.embedding = ComboBox(label="embedding (obsm)", choices=[])
        self.dims = LineEdit(label="dimensions", value="0, 1", tooltip="Which two embedding columns to draw.")
        self.color_by = ComboBox(label="colour by (obs)", choices=[], nullable=True)
        self.form = Container(widgets=[self.cells, self.embedding, self.dims, self.color_by], labels=True)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.legend)
        layout.addStretch(1)
        self._updating = False
        self.cells.changed.connect(self._on_cells)
        self.embedding.changed.connect(self._on_embedding)
        # checked when typing ends (Enter or leaving the field), not on every keystroke
        self.dims.native.editingFinished.connect(self._on_embedding)
        self.color_by.changed.connect(self._on_color)
        _connect_layer_events(self, self._refresh)
        self._refresh()

    def _adata_layers(self, *_):
        return adata_points_layers(self.viewer)

    def _refresh(self, *_):
        refresh_cells_choice(self.cells, self.viewer)
        self._on_cells()

    def _on_cells(self, *_):
        layer = self.cells.value
        self._updating = True
        try:
            if layer is None:
                self.embedding.choices, self.color_by.choices = [], []
                self.legend.setText("")
                return
            adata = get_adata(layer)
            view = layer.metadata.get(VIEW, {})
            self.embedding.choices = embedding_keys(adata)
            if view.get("obsm_key") in self.embedding.choices:
                self.embedding.value = view["obsm_key"]
            self.color_by.choices = list(adata.obs.columns)
            self.color_by.value = view.get("color_by") if view.get("color_by") in adata.obs else None
            self.legend.setText(legend_html(view.get("legend", {}), view.get("color_by")))
        finally:
            self._updating = False

    def _on_embedding(self, *_):
        if self._updating or self.cells.value is None or not self.embedding.value:
            return
        try:
            dims = tuple(int(d) for d in str(self.dims.value).replace(",", " ").split())
            if len(dims) != 2:
                raise ValueError("dimensions: give two column numbers, e.g. '0, 1'.")
            layer = show_embedding(self.viewer, self.cells.value, self.embedding.value, dims=dims)
        except (ValueError, KeyError, IndexError) as err:
            from napari.utils.notifications import show_error

            show_error(f"scnapse: {err}")
            return
        self.cells.value = layer

    def _on_color(self, *_):
        if self._updating or self.cells.value is None:
            return
        legend = recolor(self.cells.value, self.color_by.value)
        self.legend.setText(legend_html(legend, self.color_by.value))
