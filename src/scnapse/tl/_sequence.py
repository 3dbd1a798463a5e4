"""Sequence steps: embed, classify and forecast per-cell traces and time courses with GRU/LSTM
networks. The sequences are a sequence AnnData (:mod:`scnapse.ts`): ``obsm["sequence"]`` (n, T, F)
padded, ``obs["length"]``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from anndata import AnnData

from .._anndata import copy_of, sanitize_for_uns, write_embedding
from .._settings import logger
from ..models.sequence import SequenceModel
from ..pipeline.registry import EMBEDDING_METRICS, step
from ..train import RunOptions
from ._annotate import (
    annotation_model,
    check_adata_arg,
    check_fraction,
    write_annotation,
)
from ._common import ClassWeight, layer_widths, model_default, train_model

_COMMON = """sequence_key, length_key
        ``obsm`` key of the padded sequences (n, T, features); ``obs`` column of their lengths.
    run
        How training runs (progress bar, callback, cancel, precision, checkpoints and resume…): a
        :class:`scnapse.train.RunOptions`; its fields may also be given as keywords.
    **options
        :class:`scnapse.train.TrainConfig` fields (``lr``, ``max_epochs``, ``seed``…; see
        :class:`scnapse.models.SequenceModel`). The cost follows from the task."""

#: the recurrent layers' widths by default (the model's)
_HIDDEN = tuple(model_default(SequenceModel, "hidden"))


def _train(adata, task: str, *, step: str, hidden, run, options, sequence_key, length_key, labels_key=None,
           **model_args):
    """Train a ``SequenceModel`` for ``task`` (the public ``step``); ``hidden`` is a sequence of
    widths (a single integer warns)."""
    hidden = layer_widths(hidden, step=step, n_layers=model_args.pop("n_layers", None))
    fit = {"sequence_key": sequence_key, "length_key": length_key}
    if labels_key is not None:
        fit["labels_key"] = labels_key
    return train_model(SequenceModel, adata, run=run, options=options, fit=fit, task=task, hidden=hidden,
                       **model_args)


@step("scnapse.tl.sequence_embedding", trains=True, metrics=EMBEDDING_METRICS)
def sequence_embedding(
    adata: AnnData,
    *,
    n_latent: int = 8,
    cell: str = "gru",
    hidden: Sequence[int] = _HIDDEN,
    n_layers: int | None = None,
    bidirectional: bool = True,
    use_time: bool | None = None,
    sequence_key: str = "sequence",
    length_key: str = "length",
    key_added: str | None = None,
    copy: bool = False,
    run: RunOptions | None = None,
    **options,
) -> AnnData | None:
    """Embed each sequence with a recurrent sequence autoencoder.

    The encoder reads the sequence (packed: padding is never read) into a code of ``n_latent``
    numbers; a recurrent decoder rebuilds the whole sequence from the code alone (masked mse over
    the real steps of standardised features). Sequences that behave alike over time get nearby codes:
    run ``sc.pp.neighbors(adata, use_rep="X_rnn")`` and ``sc.tl.leiden`` / ``sc.tl.umap`` on it.

    Parameters
    ----------
    adata
        A sequence AnnData (:func:`scnapse.ts.from_tracks` etc.).
    n_latent
        Size of the embedding.
    cell
        ``"gru"`` or ``"lstm"``.
    hidden, bidirectional
        Widths of the stacked recurrent layers (a sequence, e.g. ``(64,)`` or ``(64, 64)``; a
        single integer is still read, with a FutureWarning) and direction(s) of the encoder.
    n_layers
        Old form of the depth (``hidden=(64,), n_layers=2`` is ``hidden=(64, 64)``), with a
        FutureWarning.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    key_added
        ``obsm[key_added]`` and ``uns[key_added]``; default ``obsm["X_rnn"]``, ``uns["rnn"]``.
    copy
        Work on a copy and return it.
    {common}

    Returns
    -------
    AnnData or None
        ``None`` or the copy. Writes ``obsm["X_rnn"]`` (n, n_latent) and ``uns["rnn"]`` =
        ``{{"params", "history"}}``.
    """
    if copy:
        adata = copy_of(adata)
    model = _train(adata, "embed", step="sequence_embedding", hidden=hidden, run=run, options=options,
                   sequence_key=sequence_key, length_key=length_key, cell=cell, n_layers=n_layers,
                   bidirectional=bidirectional, n_latent=n_latent, use_time=use_time)
    write_embedding(adata, model, model.transform(adata, sequence_key=sequence_key, length_key=length_key),
                    key_added=key_added, default_obsm="X_rnn", default_uns="rnn")
    return adata if copy else None


@step("scnapse.tl.train_sequence_classifier", trains=True, returns_model=True)
def train_sequence_classifier(
    adata: AnnData,
    *,
    labels_key: str,
    cell: str = "lstm",
    hidden: Sequence[int] = _HIDDEN,
    n_layers: int | None = None,
    bidirectional: bool = True,
    use_time: bool | None = None,
    class_weight: ClassWeight | None = None,
    linear_init: bool = True,
    sequence_key: str = "sequence",
    length_key: str = "length",
    run: RunOptions | None = None,
    **options,
) -> SequenceModel:
    """Train a GRU/LSTM classifier of whole sequences (e.g. "does this cell divide?").

    Parameters
    ----------
    adata
        A sequence AnnData; not modified.
    labels_key
        ``obs`` column with each sequence's class; sequences with a missing label are left out.
    cell, hidden, n_layers, bidirectional
        The recurrent encoder (``hidden``: a sequence of widths, e.g. ``(64,)``); its final state
        (both directions) feeds a linear softmax head.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    class_weight
        ``"balanced"`` for rare classes (weights ∝ 1 / class frequency), ``"sampling"``
        (class-balanced mini-batches, where the model supports them) or ``None``: equal weights.
    linear_init
        Start from logistic regression on standardised summary features of each sequence (per
        feature mean, std, min, max, first, last, slope; the length); the recurrent part starts
        at zero and learns what it misses. If training ends worse (validation cross-entropy) than
        the start, the start is kept (``params["kept_linear_start"]``). ``uns[key]["baseline"]``
        holds a random forest's macro-F1 on the same summary features and held-out sequences.
    {common}

    Returns
    -------
    SequenceModel
        The trained :class:`~scnapse.models.SequenceModel`; apply it with :func:`annotate_sequences`,
        save it with ``model.save(path)``.
    """
    return _train(adata, "classify", step="train_sequence_classifier", hidden=hidden, run=run, options=options,
                  sequence_key=sequence_key, length_key=length_key, labels_key=labels_key, cell=cell, n_layers=n_layers,
                  bidirectional=bidirectional, use_time=use_time, class_weight=class_weight, linear_init=linear_init)


@step("scnapse.tl.annotate_sequences", takes_model=True)
def annotate_sequences(
    adata: AnnData,
    model: SequenceModel | str | os.PathLike,
    *,
    key_added: str = "predicted",
    min_confidence: float = 0.0,
    sequence_key: str | None = None,
    length_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Label each sequence with a trained sequence classifier.

    Parameters
    ----------
    adata
        A sequence AnnData with the features the model was trained on.
    model
        A classifier from :func:`train_sequence_classifier`, or the folder it was saved to.
    key_added
        Base name of the keys written: ``"predicted"`` by default, as in every ``annotate*``
        step (before, this step wrote ``"predicted_<labels_key>"``: pass that as ``key_added``
        for the old keys).
    min_confidence
        Sequences whose top probability is below this get ``"Unassigned"`` (0, the default: never;
        the network's probabilities are not calibrated).
    sequence_key, length_key
        Default: those used in training.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        ``None`` or the copy. Writes ``obs[key_added]`` (categorical: the classes and
        ``"Unassigned"``), ``obs[key_added + "_confidence"]`` (the winning probability),
        ``obsm[key_added + "_probabilities"]`` (a DataFrame, one column per class),
        ``uns[key_added + "_colors"]`` and ``uns[key_added]`` (classes, parameters, the model's parameters).
    """
    model, model_path = annotation_model(model, SequenceModel)
    model._require_fitted("classify")
    check_adata_arg(adata)
    min_confidence = check_fraction("min_confidence", min_confidence)
    proba = model.predict_proba(adata, sequence_key=sequence_key, length_key=length_key)
    if copy:
        adata = copy_of(adata)
    write_annotation(adata, proba, model.classes, model, key=key_added, min_confidence=min_confidence,
                     params={"sequence_key": sequence_key or model.sequence_key,
                             "length_key": length_key or model.length_key, "model": model_path})
    return adata if copy else None


@step("scnapse.tl.train_forecaster", trains=True, returns_model=True)
def train_forecaster(
    adata: AnnData,
    *,
    horizon: int = 3,
    cell: str = "gru",
    hidden: Sequence[int] = _HIDDEN,
    n_layers: int | None = None,
    teacher_forcing: float = 0.5,
    use_time: bool | None = None,
    linear_init: bool = True,
    ar_order: int = 8,
    sequence_key: str = "sequence",
    length_key: str = "length",
    run: RunOptions | None = None,
    **options,
) -> SequenceModel:
    """Train a GRU/LSTM that forecasts the next ``horizon`` steps of every feature.

    Training uses every cut of every sequence with at least ``horizon + 1`` steps: the steps before
    the cut are the history, the ``horizon`` after it the target (mse on standardised features).
    The validation split is by sequence. A unidirectional encoder reads the history; a decoder
    steps forward predicting the change from the previous value, reading the true previous value
    with probability ``teacher_forcing`` while training and its own prediction otherwise (always
    at evaluation and prediction).

    Parameters
    ----------
    adata
        A sequence AnnData; not modified.
    horizon
        Steps to forecast.
    cell, hidden, n_layers
        The recurrent encoder and decoder (``hidden``: a sequence of widths, e.g. ``(64,)``).
    teacher_forcing
        Probability of reading the true previous value at a decoder step during training.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    linear_init
        Start from a linear autoregressive forecast (ridge on the last ``ar_order`` steps, fitted
        in closed form on the training windows); the recurrent part starts at zero and learns what
        it misses. If training ends worse than the start on the validation windows, the start is
        kept (``params["kept_linear_start"]``). ``uns[key]["baseline"]`` holds linear AR's and
        persistence's error on the same validation windows, next to the network's.
    ar_order
        Steps of history the linear path reads.
    {common}

    Returns
    -------
    SequenceModel
        The trained :class:`~scnapse.models.SequenceModel`; apply it with :func:`forecast`.
    """
    return _train(adata, "forecast", step="train_forecaster", hidden=hidden, run=run, options=options,
                  sequence_key=sequence_key, length_key=length_key, cell=cell, n_layers=n_layers, horizon=horizon,
                  teacher_forcing=teacher_forcing, use_time=use_time, linear_init=linear_init, ar_order=ar_order)


@step("scnapse.tl.forecast", takes_model=True)
def forecast(
    adata: AnnData,
    model: SequenceModel | str | os.PathLike,
    *,
    key_added: str = "forecast",
    sequence_key: str | None = None,
    length_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Forecast the next ``horizon`` steps after the end of each sequence.

    Parameters
    ----------
    adata
        A sequence AnnData with the features the forecaster was trained on; sequences of any
        length ≥ 1 can be forecast.
    model
        A forecaster from :func:`train_forecaster`, or the folder it was saved to.
    key_added
        ``obsm[key_added]`` and ``uns[key_added]``.
    sequence_key, length_key
        Default: those used in training.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        ``None`` or the copy. Writes ``obsm["forecast"]`` (n, horizon, features) in the data's units
        and ``uns["forecast"] = {"params", "features"}``.
    """
    model, _ = annotation_model(model, SequenceModel)
    model._require_fitted("forecast")
    pred = model.forecast(adata, sequence_key=sequence_key, length_key=length_key)
    if copy:
        adata = copy_of(adata)
    adata.obsm[key_added] = pred
    adata.uns[key_added] = sanitize_for_uns({"params": {k: v for k, v in model.params.items() if k != "environment"},
                                             "features": list(model.features)})
    logger.info(f"    added 'obsm[{key_added!r}]' ({pred.shape[1]} steps × {pred.shape[2]} features)")
    return adata if copy else None


for _f in (sequence_embedding, train_sequence_classifier, train_forecaster):
    _f.__doc__ = _f.__doc__.format(common=_COMMON)
    _f.thread_workload = SequenceModel.workload  # what a session records as the step's default threads
