"""A few cells of an image given a class by their label id: the examples an image classifier
learns from (the napari Image model panel's clicks, recorded as this step)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ..pipeline.registry import step


@step("scnapse.im.mark_classes")
def mark_classes(adata: AnnData, *, classes: dict, key_added: str = "annotation") -> None:
    """Give the cells listed in ``classes`` their class; every other cell gets none (``NaN``).

    Parameters
    ----------
    adata
        From :func:`scnapse.im.cells_from_labels`: one row per object, its id in ``obs["label"]``.
    classes
        ``{class: [label ids]}``, e.g. ``{"small": [3, 17], "large": [8, 40]}``: the objects of the
        label image that show each class.
    key_added
        The ``obs`` column written (categorical, the classes in sorted order), the ``labels_key``
        of :func:`scnapse.tl.train_image_classifier`.

    Returns
    -------
    None
        Writes ``obs[key_added]``.
    """
    if "label" not in adata.obs:
        raise KeyError("mark_classes needs obs['label'] (the object ids of the label image); make the cells "
                       "with scnapse.im.cells_from_labels.")
    if not isinstance(classes, dict) or not classes:
        raise ValueError(f"classes={classes!r}: give a mapping {{class: [label ids]}} with at least one class.")
    by_label: dict[int, str] = {}
    for cls, ids in classes.items():
        if isinstance(ids, (int, np.integer)):
            ids = [ids]
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"classes[{cls!r}]: label ids are integers, got {i!r}.")
            if int(i) in by_label and by_label[int(i)] != str(cls):
                raise ValueError(f"label {int(i)} is marked both {by_label[int(i)]!r} and {str(cls)!r}; "
                                 "give each object one class.")
            by_label[int(i)] = str(cls)
    labels = pd.to_numeric(adata.obs["label"]).astype(np.int64)
    missing = sorted(set(by_label) - set(labels.tolist()))
    if missing:
        raise ValueError(f"label id(s) {missing[:10]} are not cells of this data (obs['label'] holds "
                         f"{labels.min()}…{labels.max()}); mark objects of the label image the cells were made from.")
    names = sorted(set(by_label.values()))
    adata.obs[key_added] = pd.Categorical(labels.map(by_label).to_numpy(), categories=names)
