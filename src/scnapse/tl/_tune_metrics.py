"""What a :func:`scnapse.tl.tune` trial is scored on.

A step names its scores in its registration (``@step(..., metrics=(...))``; a training step has
``"val_loss"`` at least); each name is a :class:`Metric` here, reading the trial's
:class:`Outcome`. A new training step is tunable by its registration alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData


@dataclass
class Outcome:
    """One trial as the metrics see it."""

    adata: AnnData  # the data, with what the step wrote (taken out again after scoring)
    result: Any  # what the step returned: a model, or None
    val_losses: list[float]  # the validation loss of the start (epoch 0, where measured) and of each epoch
    written: dict = field(default_factory=dict)  # the obsm entries the step wrote
    labels: np.ndarray | None = None
    seed: int = 0

    def embedding(self) -> np.ndarray:
        """The embedding the step wrote into ``obsm`` (or its model's ``transform``)."""
        arrays = [v for v in self.written.values() if not isinstance(v, pd.DataFrame) and getattr(v, "ndim", 0) == 2]
        if len(arrays) == 1:
            return np.asarray(arrays[0])
        transform = getattr(self.result, "transform", None)
        if transform is None:
            raise ValueError(f"This step writes {len(arrays)} embeddings (obsm {sorted(self.written)}), not one; "
                             "score it on 'val_loss'.")
        return np.asarray(transform(self.adata))


@dataclass(frozen=True)
class Metric:
    """A score: how to read it from an :class:`Outcome`, and which way is better."""

    score: Callable[[Outcome], float]
    maximize: bool = True
    needs_labels: bool = False  # needs tune's labels_key
    across_costs: bool = True  # False: values under different costs are not comparable
    doc: str = ""


def _val_loss(o: Outcome) -> float:
    val = [v for v in o.val_losses if v is not None and np.isfinite(v)]
    if not val:
        raise ValueError("metric='val_loss' needs validation data; keep validation_fraction > 0.")
    return float(min(val))


def _model_metric(name: str) -> Callable[[Outcome], float]:
    def score(o: Outcome) -> float:
        value = (getattr(o.result, "metrics", None) or {}).get(name)
        if value is None:
            raise ValueError(f"The trained model has no validation {name} (validation_fraction=0?).")
        return float(value)

    return score


def _knn_accuracy(o: Outcome) -> float:
    from ._compare import knn_accuracy

    return knn_accuracy(o.embedding(), o.labels, seed=o.seed)


def _leiden_ari(o: Outcome) -> float:
    from ._compare import leiden_ari

    return leiden_ari(o.embedding(), o.labels, seed=o.seed)[0]


METRICS: dict[str, Metric] = {
    "val_loss": Metric(_val_loss, maximize=False, across_costs=False,
                       doc="the lowest validation loss of the run (the weights kept)"),
    "knn_accuracy": Metric(_knn_accuracy, needs_labels=True, doc="15-NN accuracy of labels_key on the embedding"),
    "leiden_ari": Metric(_leiden_ari, needs_labels=True, doc="ARI of Leiden clusters of the embedding vs labels_key"),
    "macro_f1": Metric(_model_metric("macro_f1"), doc="the model's validation macro F1"),
    "accuracy": Metric(_model_metric("accuracy"), doc="the model's validation accuracy"),
}

_TABLES = ("obsm", "varm", "obsp", "varp", "layers", "uns")
_FRAMES = ("obs", "var")


class Scratch:
    """Lets a trial write into ``adata`` and takes out again, on exit, whatever it wrote:
    new ``obs`` / ``var`` columns and every new or replaced ``obsm``, ``varm``, ``obsp``, ``varp``,
    ``layers`` and ``uns`` entry (no copy of the data is made)."""

    def __init__(self, adata: AnnData):
        self.adata = adata

    def __enter__(self) -> Scratch:
        self._tables = {a: dict(getattr(self.adata, a).items()) for a in _TABLES}
        self._columns = {a: set(getattr(self.adata, a).columns) for a in _FRAMES}
        return self

    def written(self, attr: str = "obsm") -> dict:
        """The entries of ``adata.<attr>`` that are new or replaced since entering."""
        before = self._tables[attr]
        return {k: v for k, v in getattr(self.adata, attr).items() if k not in before or before[k] is not v}

    def __exit__(self, *exc) -> None:
        for attr in _TABLES:
            table, before = getattr(self.adata, attr), self._tables[attr]
            for key in list(table.keys()):
                if key not in before:
                    del table[key]
            for key, value in before.items():
                if key not in table or table[key] is not value:
                    table[key] = value
        for attr in _FRAMES:
            frame = getattr(self.adata, attr)
            new = [c for c in frame.columns if c not in self._columns[attr]]
            if new:
                frame.drop(columns=new, inplace=True)
