"""scnapse's napari plugin: dock panels for the steps, AnnData as Points layers, live training.

The only part of scnapse that imports Qt, napari or magicgui; ``import scnapse`` never loads it.
Everything a panel runs is a registered pipeline step, recorded so that "Save pipeline…" writes a
pipeline file (and script) that re-creates the GUI's result with ``scnapse run``.

The names below load on first use, so that the reader (``._io``) opens an ``.h5ad`` file without
importing the panels (Qt) or the models (torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: public name → the module that defines it
_WHERE = {
    "ImageModelWidget": "_image",
    **dict.fromkeys(("napari_get_reader", "read_h5ad", "sample_nuclei", "sample_pbmc68k", "sample_pbmc160",
                     "sample_tracks", "write_h5ad"), "_io"),
    **dict.fromkeys(("ModelRef", "Session", "adata_layer_data", "cell_colors", "embedding_coords", "get_adata",
                     "show_embedding"), "_layers"),
    **dict.fromkeys(("Call", "LossPlot", "StepPanel"), "_panel"),
    **dict.fromkeys(("ScatterView", "open_scatter"), "_scatter"),
    "TimeCourseWidget": "_timecourse",
    **dict.fromkeys(("ScientificEntry", "TrainOptions"), "_train_options"),
    **dict.fromkeys(("AutoencoderWidget", "CellClassifierWidget", "CellsWidget", "ClassicWidget"), "_widgets"),
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from ._image import ImageModelWidget
    from ._io import (
        napari_get_reader, read_h5ad, sample_nuclei, sample_pbmc68k, sample_pbmc160, sample_tracks, write_h5ad,
    )
    from ._layers import (
        ModelRef, Session, adata_layer_data, cell_colors, embedding_coords, get_adata, show_embedding,
    )
    from ._panel import Call, LossPlot, StepPanel
    from ._scatter import ScatterView, open_scatter
    from ._timecourse import TimeCourseWidget
    from ._train_options import ScientificEntry, TrainOptions
    from ._widgets import AutoencoderWidget, CellClassifierWidget, CellsWidget, ClassicWidget


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
