from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import copy_of, renamed_adata, sanitize_for_uns
from .._settings import logger
from ..pipeline.registry import step
from ..models._base import check_count
from ..models.classifier import CellClassifier
from ..train import RunOptions
from ._annotate import (
    annotation_model,
    check_adata_arg,
    check_fraction,
    write_annotation,
)
from ._common import (
    ClassWeight,
    class_weight_option,
    model_default,
    train_model,
)


@step("scnapse.tl.train_classifier", trains=True, returns_model=True, metrics=("macro_f1", "accuracy", "val_loss"))
@renamed_adata("ref")
def train_classifier(
    adata: AnnData,
    *,
    labels_key: str,
    hidden: Sequence[int] = model_default(CellClassifier, "hidden"),
    class_weight: ClassWeight | None = "balanced",
    log_normalize: bool | None = None,
    scale: bool = False,
    linear_init: bool = True,
    batch_key: str | None = None,
    batch_scale: bool = False,
    layer: str | None = None,
    use_highly_variable: bool | None = None,
    key_added: str = "classifier",
    run: RunOptions | None = None,
    **options,
) -> CellClassifier:
    """Train a multi-layer perceptron cell-type classifier on labelled reference cells.

    The one step that returns a model rather than ``None``: save it with ``model.save(path)`` and
    label new cells with :func:`annotate`.

    Give raw counts (log-normalised inside the model), log-normalised data
    (``sc.pp.normalize_total`` + ``sc.pp.log1p``) or any other real-valued features, negative
    values included (protein z-scores, ΔCt, image features: standardised inside the model with the
    training statistics). The model detects and records which (``params["input"]``) and brings new
    cells to the same form; only NaN and infinite values are refused.

    Parameters
    ----------
    adata
        Labelled cells × genes (the reference; formerly ``ref=``). Dense, sparse or backed. Only
        ``uns[key_added]`` is written.
    labels_key
        Column of ``adata.obs`` with the cell types (strings or categories). Cells with a missing
        label (NaN) are left out of training, with a warning that counts them. Every class needs
        at least 2 cells (one for training, one for validation).
    hidden
        Widths of the hidden layers; ``()`` gives multinomial logistic regression.
    class_weight
        ``"balanced"`` (the cost weighs each class the same: weights ∝ 1 / class size),
        ``"sampling"`` (class-balanced mini-batches) or ``None``. The old ``class_balance=``
        (``"weights"`` / ``"sampling"`` / ``"none"``) is still read, with a FutureWarning.
    log_normalize, scale
        Input transforms; see :class:`scnapse.models.CellClassifier`.
    linear_init
        Start training at a multinomial logistic regression's solution (a linear path fitted
        exactly first, the network's nonlinear part starting at zero); ``False``: the plain MLP.
    batch_key
        Column of ``adata.obs`` with each cell's batch (sample, donor, study…), for labels that
        hold across batches: the model's input (log-normalised, or standardised features) is
        centred per batch, each batch on its own per-gene mean, and :func:`annotate` centres a
        query per query batch the same way, so a batch the model never saw gets the same
        treatment. Recorded in ``params["batch_key"]`` / ``params["batch_categories"]`` and in the
        saved model. A missing column, missing values or a batch of one cell are refused.
    batch_scale
        With ``batch_key``, also divide each batch by its own per-gene standard deviation.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_highly_variable
        Use only ``adata.var['highly_variable']`` genes; ``None``: if that column exists.
    key_added
        ``adata.uns[key_added]`` gets the record (default ``'classifier'``).
    run
        How training runs (progress bar, callback, cancel, precision, checkpoints and resume…): a
        :class:`scnapse.train.RunOptions`; its fields may also be given as keywords.
    **options
        :class:`scnapse.train.TrainConfig` fields (``lr``, ``max_epochs``, ``seed``, ``device``…);
        the classifier's own defaults are listed in :class:`scnapse.models.CellClassifier`.
        ``cost`` may only be ``"cross_entropy"``.

    Returns
    -------
    CellClassifier
        The trained :class:`~scnapse.models.CellClassifier`. ``adata.uns[key_added]`` = ``{"params":
        every resolved choice, seed, device and versions, "history": loss per epoch, "metrics":
        held-out accuracy, macro-F1, per-class F1, confusion matrix, temperature, ECE before/after}``.
    """
    class_weight = class_weight_option(class_weight, options, default="balanced")
    model = train_model(
        CellClassifier, adata, run=run, options=options,
        fit={"labels_key": labels_key, "layer": layer, "use_highly_variable": use_highly_variable},
        hidden=hidden, log_normalize=log_normalize, scale=scale, class_weight=class_weight,
        linear_init=linear_init, batch_key=batch_key, batch_scale=batch_scale,
    )
    adata.uns[key_added] = sanitize_for_uns(
        {"params": model.params, "history": model.history.to_dict(), "metrics": model.metrics,
         "classes": list(model.classes), "baseline": model.baseline}
    )
    logger.info(f"    added 'uns[{key_added!r}]' (held-out metrics, history, params)")
    return model


# what a session records as the step's default threads: its default mini-batch decides
train_classifier.thread_workload = CellClassifier.workload_for(CellClassifier.train_defaults["batch_size"])


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
    batch_key: str | None = None,
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
        Base name of the keys written (the same default, ``"predicted"``, in every ``annotate*`` step).
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
    batch_key
        For a model trained with ``batch_key``: the ``obs`` column of the query's batches, each
        centred on its own per-gene mean before the model reads it (as each training batch was).
        ``None``: the model's ``batch_key`` if the query has that column, else the whole query is
        one batch. Ignored, with a warning, by a model trained without ``batch_key``.
    batch_size
        Cells per block at prediction (bounds the memory used).
    copy
        Work on a copy and return it, leaving ``adata`` untouched.

    Returns
    -------
    AnnData or None
        ``None``, or the annotated copy with ``copy=True``. Writes ``obs[key_added]`` (categorical:
        the classes and ``"Unassigned"``), ``obs[key_added + '_confidence']`` (calibrated probability
        of the top class), ``obs[key_added + '_typicality']``, ``obsm[key_added + '_probabilities']``
        (a DataFrame, one column per class), ``uns[key_added + '_colors']``, optionally
        ``obs[key_added + '_majority_voting']``, and ``uns[key_added]`` = ``{"classes", "params",
        "n_unassigned", ...}``.
    """
    model, model_path = annotation_model(model, CellClassifier)
    check_adata_arg(adata)
    min_confidence = check_fraction("min_confidence", min_confidence)
    min_typicality = check_fraction("min_typicality", min_typicality)
    check_count(batch_size, "batch_size")
    if majority_voting:
        _check_over_clustering(adata, over_clustering)
    proba, typicality = model.predict_scores(adata, layer=layer, batch_size=batch_size, batch_key=batch_key)
    if copy:
        adata = copy_of(adata)
    params = {"min_typicality": min_typicality, "majority_voting": bool(majority_voting),
              "over_clustering": over_clustering, "layer": layer, "model": model_path,
              "model_genes": len(model.var_names), "query_input": model.query_input,
              "model_input": model.input_kind, "temperature": float(model.module.temperature),
              "model_batch_key": model.batch_key, "query_batches": model.query_batches}
    labels = write_annotation(
        adata, proba, model.classes, model, key=key_added, min_confidence=min_confidence, params=params,
        typicality=typicality, min_typicality=min_typicality,
        n_missing_genes=int((~pd.Index(model.var_names).isin(adata.var_names)).sum()),
    )
    if majority_voting:
        key = f"{key_added}_majority_voting"
        votes = _majority_vote(labels, adata.obs[over_clustering])
        adata.obs[key] = pd.Categorical(votes, categories=adata.obs[key_added].cat.categories)
        logger.info(f"    added 'obs[{key!r}]'")
    return adata if copy else None


def _check_over_clustering(adata: AnnData, over_clustering: str | None) -> None:
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


def _majority_vote(labels: np.ndarray, clusters: pd.Series) -> np.ndarray:
    """Each cell gets the most frequent label of its cluster (ties: the label seen first).
    Cells with no cluster (NaN) keep their own label."""
    frame = pd.DataFrame({"label": labels, "cluster": clusters.to_numpy()})
    out = np.asarray(labels, dtype=object).copy()
    for _, rows in frame.dropna(subset=["cluster"]).groupby("cluster", observed=True, sort=False):
        winner = rows["label"].value_counts(sort=True).index[0]
        out[rows.index.to_numpy()] = winner
    return out
