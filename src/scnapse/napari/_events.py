"""Keeping a panel's pickers in step with the viewer's layers."""

from __future__ import annotations

from qtpy.QtWidgets import QWidget

from ._layers import _is_points, is_adata_layer


def _connect_layer_events(widget: QWidget, callback) -> None:
    """Call ``callback`` when layers are added, removed or renamed (a panel's result may turn a
    placeholder layer into an embedding's, renaming it), until ``widget`` is destroyed (a closed
    dock widget must not be called again). Calls made while ``callback`` runs are dropped."""
    layers = widget.viewer.layers
    running = False

    def call(*args):
        nonlocal running
        if running:
            return
        running = True
        try:
            callback(*args)
        finally:
            running = False

    def inserted(event):
        event.value.events.name.connect(call)
        call(event)

    for layer in layers:
        layer.events.name.connect(call)
    layers.events.inserted.connect(inserted)
    layers.events.removed.connect(call)

    def disconnect(*_):
        layers.events.inserted.disconnect(inserted)
        layers.events.removed.disconnect(call)
        for layer in layers:
            layer.events.name.disconnect(call)

    widget.destroyed.connect(disconnect)


def adata_points_layers(viewer) -> list[tuple[str, object]]:
    """``(name, layer)`` of every Points layer of ``viewer`` that carries an AnnData."""
    return [(layer.name, layer) for layer in viewer.layers if is_adata_layer(layer) and _is_points(layer)]


def refresh_cells_choice(combo, viewer) -> None:
    """Re-read ``combo``'s layer choices; keep its value if still there, else take the active
    layer when it is one of them, else the newest."""
    current = combo.value
    combo.reset_choices()
    layers = [choice for choice in combo.choices if choice is not None]
    if current in layers:
        combo.value = current
    elif layers:
        selected = viewer.layers.selection.active
        combo.value = selected if selected in layers else layers[-1]
