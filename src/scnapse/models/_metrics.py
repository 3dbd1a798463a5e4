"""Held-out scores of classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1 (over the classes present in ``y_true``), per-class F1 and the
    confusion matrix (rows = true class, columns = predicted; in ``classes`` order)."""
    from sklearn.metrics import confusion_matrix, f1_score

    k = len(classes)
    present = np.unique(y_true)
    per_class = f1_score(y_true, y_pred, labels=np.arange(k), average=None, zero_division=0)
    return {
        "n_cells": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean(per_class[present])) if len(y_true) else float("nan"),
        "per_class_f1": {c: (float(per_class[i]) if i in present else None) for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=np.arange(k)).tolist(),
    }
