"""Legends of the categorical colourings a panel makes: painted image classes (Labels), annotation
points coloured by their class, classified tracks, cells coloured by an ``obs`` column."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel

from ._layers import VIEW

#: the feature of an annotation layer's points that holds each click's class
ANNOTATION_KEY = "annotation"


def class_colors(classes) -> dict[str, str]:
    """``{class: hex}`` for class names: the classes sorted, coloured in the order the image
    classifier paints its predictions, so that a clicked class and the class predicted for it
    share a colour."""
    from ..im._paint import PALETTE

    names = sorted({str(c) for c in classes})
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(names)}


def color_annotations(layer, key: str = ANNOTATION_KEY) -> dict[str, str]:
    """Colour each point of an annotation layer by its class (``features[key]``); returns the legend."""
    if len(layer.data) == 0 or key not in layer.features:
        return {}
    classes = layer.features[key].astype(str).to_numpy()
    legend = class_colors(classes)
    from matplotlib import colors as mcolors

    rgba = np.array([mcolors.to_rgba(legend[c]) for c in classes])
    if layer.face_color.shape != rgba.shape or not np.allclose(layer.face_color, rgba):
        layer.face_color = rgba
    layer.metadata[VIEW] = {**layer.metadata.get(VIEW, {}), "color_by": key, "legend": legend}
    return legend


def layer_legend(layer) -> tuple[str | None, dict[str, str]]:
    """``(column, {label: hex})`` of the colouring a layer shows (empty when it has none)."""
    if layer is None:
        return None, {}
    view = getattr(layer, "metadata", {}).get(VIEW, {})
    return view.get("color_by"), dict(view.get("legend") or {})


def legends_html(layers) -> str:
    from ._cells import legend_html

    parts = []
    for layer in layers:
        column, legend = layer_legend(layer)
        if legend:
            parts.append(f"<i>{layer.name}</i><br>" + legend_html(legend, column))
    return "<br>".join(parts)


class LegendLabel(QLabel):
    """The legends of ``layers()`` (a function returning the layers to describe), updated by
    :meth:`update_legend`."""

    def __init__(self, layers):
        super().__init__()
        self._layers = layers
        self.setWordWrap(True)
        self.legend: dict[str, str] = {}

    def update_legend(self, *_) -> None:
        layers = [x for x in self._layers() if x is not None]
        self.legend = {}
        for layer in layers:
            self.legend.update(layer_legend(layer)[1])
        self.setText(legends_html(layers))
