"""One label encoder for every classifier family, with one set of rules, and class imbalance.

:func:`encode_labels` turns an ``obs`` column into class codes:

- a missing label (``NaN``, ``None``, or the strings ``""``, ``"nan"``, ``"NaN"``, ``"None"``)
  leaves the cell out of training, with a warning that counts such cells;
- a categorical or string column gives its values as classes (a categorical keeps its category
  order, a string column is sorted); a column of integers or booleans (cluster ids, yes/no) gives
  classes named by its values, ordered by value; a column of non-integer numbers is refused (it
  holds measurements, not classes);
- an object column mixing numbers and strings that read the same (``1`` and ``"1"``) is refused,
  as those would silently become one class;
- fewer than two classes, a class with a single cell, or a class named ``"Unassigned"`` (the name
  low-confidence cells get) are refused, each with what to do instead.

Class imbalance has one vocabulary in every family (``class_weight``): ``"balanced"`` (each class
weighs the same in the cost), ``"sampling"`` (mini-batches drawn with every class equally likely)
or ``None`` (each cell weighs the same).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..train.data import Loader

UNASSIGNED = "Unassigned"
MISSING_STRINGS = frozenset({"", "nan", "NaN", "None", "none", "NA", "<NA>"})
CLASS_WEIGHTS = ("balanced", "sampling", None)
#: the old ``class_balance`` values of the cell classifier, as ``class_weight``
_OLD_CLASS_BALANCE = {"weights": "balanced", "sampling": "sampling", "none": None}


@dataclass
class Labels:
    """Encoded labels: ``codes`` per row (-1 = no label), ``classes`` and the ``labelled`` rows."""

    codes: np.ndarray
    classes: list[str]
    labelled: np.ndarray
    key: str

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes[self.labelled], minlength=len(self.classes))


def check_class_weight(class_weight, class_balance=None) -> str | None:
    """``class_weight`` checked (``class_balance``, the old name, still accepted with a warning)."""
    if class_balance is not None:
        if class_balance not in _OLD_CLASS_BALANCE:
            raise ValueError(
                f"class_balance={class_balance!r} is not valid; use class_weight= one of {list(CLASS_WEIGHTS)}."
            )
        warnings.warn(
            f"class_balance={class_balance!r} is now class_weight={_OLD_CLASS_BALANCE[class_balance]!r}; "
            "class_balance= will be removed.",
            FutureWarning, stacklevel=3,
        )
        class_weight = _OLD_CLASS_BALANCE[class_balance]
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight={class_weight!r} is not valid; choose one of {list(CLASS_WEIGHTS)}.")
    return class_weight


def _missing(col: pd.Series) -> np.ndarray:
    missing = col.isna().to_numpy()
    if not isinstance(col.dtype, pd.CategoricalDtype) and col.dtype == object:
        missing |= col.map(lambda v: isinstance(v, str) and v.strip() in MISSING_STRINGS).to_numpy(dtype=bool)
    elif isinstance(col.dtype, pd.CategoricalDtype):
        missing |= col.astype(object).map(lambda v: isinstance(v, str) and v.strip() in MISSING_STRINGS).to_numpy(
            dtype=bool)
    return missing


def _class_names(col: pd.Series, known: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """The label of each known row as a string, and the classes in their order."""
    values = col[known]
    if isinstance(col.dtype, pd.CategoricalDtype):
        names = values.astype(object).astype(str).to_numpy()
        present = set(names)
        return names, [str(c) for c in col.cat.categories if str(c) in present]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        v = values.to_numpy()
        if not pd.api.types.is_bool_dtype(values) and not np.all(np.equal(np.mod(v, 1), 0)):
            raise ValueError(
                f"{where} holds non-integer numbers ({values.dtype}, e.g. {v[0]!r}): measurements, not "
                "classes. Give a column of class names, or integer cluster ids."
            )
        if not pd.api.types.is_bool_dtype(values):
            v = v.astype(np.int64)
        order = [str(u) for u in np.unique(v)]
        return np.asarray([str(x) for x in v], dtype=object), order
    objects = values.to_numpy(dtype=object)
    names = np.asarray([str(x) for x in objects], dtype=object)
    kinds: dict[str, set] = {}
    for raw, name in zip(objects, names):
        kinds.setdefault(name, set()).add(type(raw).__name__)
    mixed = sorted(n for n, t in kinds.items() if len(t) > 1)
    if mixed:
        raise ValueError(
            f"{where} mixes numbers and text that read the same ({mixed[:5]}): they would become one class. "
            "Make the column one type first (all text, or all numbers)."
        )
    return names, sorted(kinds)


def encode_labels(obs: pd.DataFrame, labels_key, *, what: str = "cells", stacklevel: int = 3,
                  warn_missing: bool = True) -> Labels:
    """Class codes for ``obs[labels_key]`` under the module's rules (see the module docstring).

    ``warn_missing=False`` logs the count of unlabelled rows instead of warning (for families
    where most rows are unlabelled on purpose, as cells not annotated in an image)."""
    if labels_key is None:
        raise ValueError("A classifier needs labels_key=, the name of the obs column with the classes.")
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key must be the name of an obs column (a str), not {labels_key!r}.")
    if labels_key not in obs.columns:
        raise KeyError(f"labels_key={labels_key!r} is not a column of obs; the columns are {list(obs.columns)}.")
    where = f"obs[{labels_key!r}]"
    col = obs[labels_key]
    missing = _missing(col)
    if missing.all():
        raise ValueError(f"{where} has no label at all: every value is missing (NaN or empty).")
    if missing.any():
        message = f"{int(missing.sum())} of {len(col)} {what} have no label in {where}; they are left out of training."
        if warn_missing:
            warnings.warn(message, UserWarning, stacklevel=stacklevel)
        else:
            from .._settings import logger

            logger.info(message)
    known = ~missing
    names, classes = _class_names(col, known, where)
    if len(classes) < 2:
        raise ValueError(
            f"{where} has {len(classes)} class ({classes}); a classifier needs at least 2: label some {what} "
            "of another class."
        )
    if UNASSIGNED in classes:
        raise ValueError(
            f"{where} has a class named {UNASSIGNED!r}, the name scnapse gives to low-confidence {what}; "
            "rename that class, or leave those cells unlabelled."
        )
    labelled = np.flatnonzero(known)
    codes = np.full(len(col), -1, dtype=np.int64)
    codes[labelled] = pd.Index(classes).get_indexer(names)
    labels = Labels(codes, classes, labelled, labels_key)
    lonely = [c for c, n in zip(classes, labels.counts) if n < 2]
    if lonely:
        raise ValueError(
            f"Class(es) {lonely[:10]} of {where} have a single labelled cell; a classifier needs at least 2 per "
            "class (one to learn from, one to validate on). Label more cells of those classes, merge them "
            "into a related class, or leave them unlabelled."
        )
    return labels


def balanced_weights(train_codes: np.ndarray, n_classes: int, device) -> torch.Tensor:
    """Per-class cost weights ∝ 1 / class size among the training rows (mean weight per cell 1)."""
    counts = np.bincount(train_codes, minlength=n_classes)
    w = len(train_codes) / (n_classes * np.maximum(counts, 1))
    return torch.as_tensor(w, dtype=torch.float32, device=device)


class BalancedLoader(Loader):
    """Each pass draws as many rows as there are, every class equally likely (with replacement)."""

    def __init__(self, fields, indices, batch_size, *, class_of: np.ndarray, generator, device):
        super().__init__(fields, indices, batch_size, shuffle=True, generator=generator, drop_single=True,
                         device=device)
        counts = np.bincount(class_of)
        self.prob = torch.as_tensor(1.0 / counts[class_of], dtype=torch.float64)

    def __iter__(self):
        draw = torch.multinomial(self.prob, len(self.indices), replacement=True, generator=self.generator)
        order = self.indices[draw]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) == 1 and len(order) > 1:
                continue
            yield self.batch(torch.sort(idx).values)


def labels_from_proba(proba: np.ndarray, classes, min_confidence: float = 0.0,
                      typicality: np.ndarray | None = None, min_typicality: float = 0.0):
    """``(labels, confidence)``: the top class of each row of ``proba`` (an object array of names)
    and its probability; ``"Unassigned"`` where the probability is below ``min_confidence`` or the
    typicality below ``min_typicality``."""
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(top)), top]
    names = np.asarray(list(classes), dtype=object)[top]
    low = confidence < min_confidence
    if typicality is not None:
        low |= typicality < min_typicality
    names[low] = UNASSIGNED
    return names, confidence


def as_categorical(names: np.ndarray, classes) -> pd.Categorical:
    """Class names as a ``pandas.Categorical`` over ``classes`` (and ``"Unassigned"`` if present):
    what every classifier's ``predict`` returns."""
    categories = list(classes) + ([UNASSIGNED] if np.any(names == UNASSIGNED) else [])
    return pd.Categorical(names, categories=categories)
