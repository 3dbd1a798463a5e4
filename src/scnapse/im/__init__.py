"""Images: per-cell crops from an image and its segmentation, and predictions painted back."""

from ._crops import cells_from_labels
from ._data import sample_image
from ._marks import mark_classes
from ._paint import class_table, label_colors, label_features, paint_classes
from ._synthetic import synthetic_image

__all__ = ["cells_from_labels", "class_table", "label_colors", "label_features", "mark_classes", "paint_classes", "sample_image", "synthetic_image"]
