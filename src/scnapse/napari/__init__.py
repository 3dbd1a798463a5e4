"""scnapse's napari plugin: dock panels for the steps, AnnData as Points layers, live training.

The only part of scnapse that imports Qt, napari or magicgui; ``import scnapse`` never loads it.
Everything a panel runs is a registered pipeline step, recorded so that "Save pipeline…" writes a
pipeline file (and script) that re-creates the GUI's result with ``scnapse run``.
"""

from ._image import ImageModelWidget
from ._io import (
    napari_get_reader, read_h5ad, sample_nuclei, sample_pbmc68k, sample_pbmc160, sample_tracks, write_h5ad,
)
from ._layers import ModelRef, Session, adata_layer_data, cell_colors, embedding_coords, get_adata, show_embedding
from ._panel import Call, LossPlot, StepPanel
from ._timecourse import TimeCourseWidget
from ._train_options import ScientificEntry, TrainOptions
from ._widgets import AutoencoderWidget, CellClassifierWidget, CellsWidget, ClassicWidget

__all__ = [
    "AutoencoderWidget", "Call", "CellClassifierWidget", "CellsWidget", "ClassicWidget", "ImageModelWidget", "LossPlot", "ModelRef", "ScientificEntry", "Session",
    "StepPanel", "TimeCourseWidget", "TrainOptions", "adata_layer_data", "cell_colors", "embedding_coords", "get_adata",
    "napari_get_reader", "read_h5ad", "sample_nuclei", "sample_pbmc160", "sample_pbmc68k", "sample_tracks", "show_embedding", "write_h5ad",
]
