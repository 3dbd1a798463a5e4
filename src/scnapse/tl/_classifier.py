from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import sanitize_for_uns
from .._settings import logger
from ..models.classifier import UNASSIGNED, CellClassifier, labels_from_proba
from ..pipeline.registry import step


@step("scnapse.tl.train_classifier", trains=True, returns_model=True, metrics=("macro_f1", "accuracy", "val_loss"))
def train_classifier(
    ref: AnnData,
    *,
    labels_key: str,
    hidden: Sequence[int] = (256, 128),
    class_balance: str = "weights",
    log_normalize: bool | None = None,
    scale: bool = False,
    layer: str | None = None,
    use_highly_variable: bool | None = None,
    key_added: str = "classifier",
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    **train_options,
) -> CellClassifier:
    """Train a multi-layer perceptron cell-type classifier on labelled reference cells.

    The one step that returns a model rather than ``None``: save it with ``model.save(path)`` and
    label new cells with :func:`annotate`.

    Give raw counts (log-normalised inside the model) or log-normalised data
    (``sc.pp.normalize_total`` + ``sc.pp.log1p``), not scaled data; the model records which, and
    brings new cells to the same form whichever of the two they come in.

    Parameters
    ----------
    ref
        Labelled cells × genes. Dense, sparse or backed. Only ``uns[key_added]`` is written.
    labels_key
        Column of ``ref.obs`` with the cell types (strings or categories). Cells with a missing
        label (NaN) are left out of training, with a warning that counts them. Every class needs
        at least 2 cells (one for training, one for validation); numeric columns are refused.
    hidden
        Widths of the hidden layers; ``()`` gives multinomial logistic regression.
    class_balance
        ``"weights"`` (cost weighted ∝ 1 / class size), ``"sampling"`` (class-balanced
        mini-batches) or ``"none"``.
    log_normalize, scale
        Input transforms; see :class:`scnapse.models.CellClassifier`.
    layer
        Use ``ref.layers[layer]`` instead of ``ref.X``.
    use_highly_variable
        Use only ``ref.var['highly_variable']`` genes; ``None``: if that column exists.
    key_added
        ``ref.uns[key_added]`` gets the record (default ``'classifier'``).
    progress, callback, cancel
        Progress bar; per-epoch callback (return ``False`` to stop); a ``threading.Event`` that
        stops training, keeping the best model so far.
    **train_options
        :class:`~scnapse.train.TrainConfig` fields: ``activation``, ``dropout`` (default 0.5),
        ``input_noise``, ``l1``, ``l2``, ``batch_norm``, ``optimizer``, ``lr``, ``momentum``,
        ``weight_decay``, ``batch_size`` (32), ``max_epochs``, ``early_stopping`` (15),
        ``validation_fraction`` (0.15, stratified), ``lr_schedule``, ``seed``, ``device``,
        ``deterministic``. ``cost`` may only be ``"cross_entropy"``.

    Returns
    -------
    The trained :class:`~scnapse.models.CellClassifier`. ``ref.uns[key_added]`` = ``{"params":
    every resolved choice, seed, device and versions, "history": loss per epoch, "metrics":
    held-out accuracy, macro-F1, per-class F1, confusion matrix, temperature, ECE before/after}``.
    """
    model = CellClassifier(hidden, class_balance=class_balance, log_normalize=log_normalize, scale=scale,
                           **train_options)
    model.fit(ref, labels_key=labels_key, layer=layer, use_highly_variable=use_highly_variable,
              progress=progress, callback=callback, cancel=cancel)
    ref.uns[key_added] = sanitize_for_uns(
        {"params": model.params, "history": model.history.to_dict(), "metrics": model.metrics,
         "classes": list(model.classes)}
    )
    logger.info(f"    added 'uns[{key_added!r}]' (held-out metrics, history, params)")
    return model


@step("scnapse.tl.annotate", takes_model=True)
def annotate(
    adata: AnnData,
    model: CellClassifier | str | os.PathLike,
    *,
    key_added: str = "predicted",
    min_confidence: float = 0.5,
    min_typicality: float = 0.01,
    majority_voting: bool = False,
    over_clustering: str | None = None,
    layer: str | None = None,
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Label cells with a trained :class:`~scnapse.models.CellClassifier`.

    Genes are matched by name (reordered; missing ones are filled with zeros with a warning,
    and fewer than half of the model's genes is refused). Raw counts or log-normalised data may
    be given whatever the model was trained on.

    Parameters
    ----------
    adata
        Cells to label. Dense, sparse or backed; only the keys below are written.
    model
        A trained ``CellClassifier``, or the folder it was saved to (as pipeline files give it).
    key_added
        Base name of the keys written.
    min_confidence
        Cells whose calibrated top probability is below this get ``"Unassigned"`` (0 = never).
    min_typicality
        Cells whose typicality is below this get ``"Unassigned"`` (0 = never). Typicality is an
        empirical p-value: the fraction of held-out reference cells at least as far from the
        nearest known class (Mahalanobis distance in a PCA of the model's input). A softmax is
        confident even on cell types it never saw; their typicality is near 0. With the default
        0.01, about 1% of cells of known types are also left unassigned.
    majority_voting
        Also label each cluster of ``obs[over_clustering]`` by the majority of its cells'
        labels (``"Unassigned"`` included), in ``obs[key_added + '_majority_voting']``; the
        per-cell labels stay in ``obs[key_added]``.
    over_clustering
        The ``obs`` column of clusters for majority voting (e.g. from ``sc.tl.leiden`` at a high
        resolution). Required with ``majority_voting=True``.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    batch_size
        Cells per block at prediction (bounds the memory used).
    copy
        Work on a copy and return it, leaving ``adata`` untouched.

    Returns
    -------
    ``None``, or the annotated copy with ``copy=True``. Writes ``obs[key_added]`` (categorical:
    the classes and ``"Unassigned"``), ``obs[key_added + '_confidence']`` (calibrated probability
    of the top class), ``obs[key_added + '_typicality']``, ``obsm[key_added + '_probabilities']`` (a DataFrame, one column per class),
    optionally ``obs[key_added + '_majority_voting']``, and ``uns[key_added]`` = ``{"classes",
    "params", "n_unassigned", ...}``.
    """
    if isinstance(model, (str, os.PathLike)):
        model_path = os.fspath(model)
        model = CellClassifier.load(model_path)
    elif isinstance(model, CellClassifier):
        model_path = None
    else:
        raise TypeError(
            f"model must be a trained scnapse.models.CellClassifier or the path it was saved to, not "
            f"{type(model).__name__}."
        )
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence={min_confidence!r} must be a number between 0 and 1.")
    if isinstance(min_typicality, bool) or not isinstance(min_typicality, (int, float)) or not 0 <= min_typicality <= 1:
        raise ValueError(f"min_typicality={min_typicality!r} must be a number between 0 and 1.")
    if majority_voting:
        if over_clustering is None:
            raise ValueError(
                "majority_voting=True needs over_clustering= naming an adata.obs column of clusters "
                "(e.g. run sc.pp.neighbors and sc.tl.leiden(adata, resolution=5, key_added='over') first)."
            )
        if over_clustering not in adata.obs.columns:
            raise KeyError(
                f"over_clustering={over_clustering!r} is not a column of adata.obs; available columns: "
                f"{list(adata.obs.columns)}."
            )
    proba, typicality = model.predict_scores(adata, layer=layer, batch_size=batch_size)
    labels, confidence = labels_from_proba(proba, model.classes, min_confidence, typicality, min_typicality)
    if copy:
        adata = adata.copy()
    categories = [*model.classes, UNASSIGNED]
    adata.obs[key_added] = pd.Categorical(labels, categories=categories)
    adata.obs[f"{key_added}_confidence"] = confidence.astype(np.float32)
    adata.obs[f"{key_added}_typicality"] = typicality
    adata.obsm[f"{key_added}_probabilities"] = pd.DataFrame(proba, index=adata.obs_names,
                                                            columns=list(model.classes))
    n_unassigned = int((labels == UNASSIGNED).sum())
    record = {
        "classes": list(model.classes),
        "params": {"min_confidence": float(min_confidence), "min_typicality": float(min_typicality),
                   "majority_voting": bool(majority_voting),
                   "over_clustering": over_clustering, "layer": layer, "model": model_path,
                   "model_genes": len(model.var_names), "query_input": model.query_input,
                   "model_input": model.input_kind, "temperature": float(model.module.temperature)},
        "n_cells": int(adata.n_obs),
        "n_unassigned": n_unassigned,
        "n_missing_genes": int((~pd.Index(model.var_names).isin(adata.var_names)).sum()),
    }
    written = [f"obs[{key_added!r}]", f"obs['{key_added}_confidence']", f"obs['{key_added}_typicality']",
               f"obsm['{key_added}_probabilities']"]
    if majority_voting:
        key = f"{key_added}_majority_voting"
        adata.obs[key] = pd.Categorical(_majority_vote(labels, adata.obs[over_clustering]), categories=categories)
        written.append(f"obs[{key!r}]")
    adata.uns[key_added] = sanitize_for_uns(record)
    logger.info(f"    {n_unassigned} of {adata.n_obs} cells Unassigned; added {', '.join(written)}, 'uns[{key_added!r}]'")
    return adata if copy else None


def _majority_vote(labels: np.ndarray, clusters: pd.Series) -> np.ndarray:
    """Each cell gets the most frequent label of its cluster (ties: the label seen first).
    Cells with no cluster (NaN) keep their own label."""
    frame = pd.DataFrame({"label": labels, "cluster": clusters.to_numpy()})
    out = np.asarray(labels, dtype=object).copy()
    for _, rows in frame.dropna(subset=["cluster"]).groupby("cluster", observed=True, sort=False):
        winner = rows["label"].value_counts(sort=True).index[0]
        out[rows.index.to_numpy()] = winner
    return out
