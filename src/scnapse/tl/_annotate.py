"""What the ``annotate*`` steps share: the model argument (an object or its saved folder), the
thresholds, and the results written the same way in every family."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import sanitize_for_uns
from .._settings import logger
from ..im._paint import PALETTE, UNCLASSIFIED
from ..models.classifier import UNASSIGNED, labels_from_proba


def annotation_model(model, cls) -> tuple[object, str | None]:
    """``(model, folder)``: a trained ``cls``, loaded with ``cls.load`` when ``model`` is the
    folder it was saved to (``folder`` is then that path, for the record)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return cls.load(path), path
    if not isinstance(model, cls):
        raise TypeError(
            f"model must be a trained scnapse.models.{cls.__name__} or the folder it was saved to, not "
            f"{type(model).__name__}."
        )
    return model, None


def check_fraction(name: str, value) -> float:
    """A threshold between 0 and 1, with an error naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} must be a number between 0 and 1.")
    return float(value)


def check_key(name: str, value) -> str:
    """A name for the keys a step writes: a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} must be a non-empty string, e.g. {name}='predicted'.")
    return value


def check_adata_arg(adata) -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")


def class_colors(n_classes: int) -> list[str]:
    """One colour per class, then grey for ``"Unassigned"`` (``uns[key + "_colors"]``)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n_classes)] + [UNCLASSIFIED]


def warn_if_users_column(adata: AnnData, key: str) -> None:
    """Warn before replacing an ``obs[key]`` that scnapse did not write (its own annotations have
    their record in ``uns[key]``, with the classes and params)."""
    if key not in adata.obs.columns:
        return
    record = adata.uns.get(key)
    if isinstance(record, dict) and "classes" in record and "params" in record:
        return
    warnings.warn(
        f"adata.obs[{key!r}] already exists and was not written by a scnapse annotation; it is replaced. "
        f"Pass key_added='...' (another name) to keep it.",
        UserWarning,
        stacklevel=4,
    )


def write_annotation(
    adata: AnnData,
    proba: np.ndarray,
    classes,
    model,
    *,
    key: str,
    min_confidence: float,
    params: dict,
    typicality: np.ndarray | None = None,
    min_typicality: float = 0.0,
    **record,
) -> np.ndarray:
    """Write one annotation the same way in every family and return the labels.

    ``obs[key]`` (categorical: the classes and ``"Unassigned"``, which cells whose top
    probability is below ``min_confidence`` or whose typicality is below ``min_typicality`` get),
    ``obs[key + "_confidence"]`` (the top probability), ``obs[key + "_typicality"]`` (when
    given), ``obsm[key + "_probabilities"]`` (a DataFrame, one column per class),
    ``uns[key + "_colors"]`` and ``uns[key]`` = ``{"classes", "params", "model_params",
    "n_cells", "n_unassigned", **record}``.
    """
    check_key("key_added", key)
    warn_if_users_column(adata, key)
    classes = [str(c) for c in classes]
    labels, confidence = labels_from_proba(proba, classes, min_confidence, typicality, min_typicality)
    adata.obs[key] = pd.Categorical(labels, categories=[*classes, UNASSIGNED])
    adata.obs[f"{key}_confidence"] = np.asarray(confidence, dtype=np.float32)
    written = [f"obs[{key!r}]", f"obs['{key}_confidence']"]
    if typicality is not None:
        adata.obs[f"{key}_typicality"] = typicality
        written.append(f"obs['{key}_typicality']")
    adata.obsm[f"{key}_probabilities"] = pd.DataFrame(np.asarray(proba), index=adata.obs_names, columns=classes)
    adata.uns[f"{key}_colors"] = class_colors(len(classes))
    n_unassigned = int((labels == UNASSIGNED).sum())
    adata.uns[key] = sanitize_for_uns({
        "classes": classes,
        "params": {"min_confidence": float(min_confidence), **params},
        "model_params": {k: v for k, v in model.params.items() if k != "environment"},
        "n_cells": int(adata.n_obs),
        "n_unassigned": n_unassigned,
        **record,
    })
    written += [f"obsm['{key}_probabilities']", f"uns[{key!r}]"]
    logger.info(f"    {n_unassigned} of {adata.n_obs} cells Unassigned; added {', '.join(written)}")
    return labels
