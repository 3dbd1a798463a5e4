"""Sequence steps: embed, classify and forecast per-cell traces and time courses with GRU/LSTM
networks. The sequences are a sequence AnnData (:mod:`scnapse.ts`): ``obsm["sequence"]`` (n, T, F)
padded, ``obs["length"]``."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import sanitize_for_uns, write_embedding
from .._settings import logger
from ..models.sequence import SequenceModel
from ..pipeline.registry import EMBEDDING_METRICS, step

_COMMON = """sequence_key
        ``obsm`` key of the padded sequences (n, T, features).
    length_key
        ``obs`` column with each sequence's number of real steps.
    progress
        Show a progress bar.
    callback
        Called with an :class:`~scnapse.train.EpochReport` after each epoch; return ``False`` to stop.
    cancel
        A ``threading.Event``; setting it stops training and keeps the best model so far.
    **train_options
        :class:`~scnapse.train.TrainConfig` fields: ``dropout``, ``input_noise``, ``l1``, ``l2``,
        ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``batch_size``, ``max_epochs``,
        ``early_stopping``, ``validation_fraction``, ``lr_schedule``, ``seed``, ``device``,
        ``deterministic``. The cost follows from the task."""


def _model(model) -> SequenceModel:
    if isinstance(model, (str, os.PathLike)):
        return SequenceModel.load(model)
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model must be a SequenceModel (or the folder it was saved to), not {type(model).__name__}.")
    return model


@step("scnapse.tl.sequence_embedding", trains=True, metrics=EMBEDDING_METRICS)
def sequence_embedding(
    adata: AnnData,
    *,
    n_latent: int = 8,
    cell: str = "gru",
    hidden: int = 64,
    n_layers: int = 1,
    bidirectional: bool = True,
    use_time: bool | None = None,
    sequence_key: str = "sequence",
    length_key: str = "length",
    key_added: str | None = None,
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    copy: bool = False,
    **train_options,
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
    hidden, n_layers, bidirectional
        Recurrent layer width, depth and direction(s) of the encoder.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    key_added
        ``obsm[key_added]`` and ``uns[key_added]``; default ``obsm["X_rnn"]``, ``uns["rnn"]``.
    copy
        Work on a copy and return it.
    {common}

    Returns
    -------
    ``None`` or the copy. Writes ``obsm["X_rnn"]`` (n, n_latent) and ``uns["rnn"]`` =
    ``{{"params", "history"}}``.
    """
    model = SequenceModel("embed", cell=cell, hidden=hidden, n_layers=n_layers, bidirectional=bidirectional,
                          n_latent=n_latent, use_time=use_time, **train_options)
    if copy:
        adata = adata.copy()
    model.fit(adata, sequence_key=sequence_key, length_key=length_key, progress=progress, callback=callback,
              cancel=cancel)
    write_embedding(adata, model, model.transform(adata, sequence_key=sequence_key, length_key=length_key),
                    key_added=key_added, default_obsm="X_rnn", default_uns="rnn")
    return adata if copy else None


@step("scnapse.tl.train_sequence_classifier", trains=True, returns_model=True)
def train_sequence_classifier(
    adata: AnnData,
    *,
    labels_key: str,
    cell: str = "lstm",
    hidden: int = 64,
    n_layers: int = 1,
    bidirectional: bool = True,
    use_time: bool | None = None,
    class_weight: str | None = None,
    sequence_key: str = "sequence",
    length_key: str = "length",
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    **train_options,
) -> SequenceModel:
    """Train a GRU/LSTM classifier of whole sequences (e.g. "does this cell divide?").

    Parameters
    ----------
    adata
        A sequence AnnData; not modified.
    labels_key
        ``obs`` column with each sequence's class; sequences with a missing label are left out.
    cell, hidden, n_layers, bidirectional
        The recurrent encoder; its final state (both directions) feeds a linear softmax head.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    class_weight
        ``"balanced"`` for rare classes (weights ∝ 1 / class frequency); ``None``: equal weights.
    {common}

    Returns
    -------
    The trained :class:`~scnapse.models.SequenceModel`; apply it with :func:`annotate_sequences`,
    save it with ``model.save(path)``.
    """
    model = SequenceModel("classify", cell=cell, hidden=hidden, n_layers=n_layers, bidirectional=bidirectional,
                          use_time=use_time, class_weight=class_weight, **train_options)
    return model.fit(adata, labels_key=labels_key, sequence_key=sequence_key, length_key=length_key,
                     progress=progress, callback=callback, cancel=cancel)


@step("scnapse.tl.annotate_sequences", takes_model=True)
def annotate_sequences(
    adata: AnnData,
    model: SequenceModel | str | os.PathLike,
    *,
    key_added: str | None = None,
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
        Default ``"predicted_<labels_key>"``.
    sequence_key, length_key
        Default: those used in training.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` or the copy. Writes ``obs[key]`` (categorical), ``obs[key + "_confidence"]`` (the
    winning probability), ``obsm[key + "_probabilities"]`` (a DataFrame, one column per class)
    and ``uns[key]["params"]``.
    """
    model = _model(model)
    model._require_fitted("classify")
    key = key_added or f"predicted_{model.labels_key}"
    proba = model.predict_proba(adata, sequence_key=sequence_key, length_key=length_key)
    if copy:
        adata = adata.copy()
    classes = list(model.classes)
    adata.obs[key] = pd.Categorical(np.asarray(classes, dtype=object)[proba.argmax(axis=1)], categories=classes)
    adata.obs[f"{key}_confidence"] = proba.max(axis=1)
    adata.obsm[f"{key}_probabilities"] = pd.DataFrame(proba, index=adata.obs_names, columns=classes)
    adata.uns[key] = sanitize_for_uns({"params": {k: v for k, v in model.params.items() if k != "environment"}})
    logger.info(f"    added 'obs[{key!r}]', 'obs[{key + '_confidence'!r}]', 'obsm[{key + '_probabilities'!r}]'")
    return adata if copy else None


@step("scnapse.tl.train_forecaster", trains=True, returns_model=True)
def train_forecaster(
    adata: AnnData,
    *,
    horizon: int = 3,
    cell: str = "gru",
    hidden: int = 64,
    n_layers: int = 1,
    teacher_forcing: float = 0.5,
    use_time: bool | None = None,
    sequence_key: str = "sequence",
    length_key: str = "length",
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    **train_options,
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
        The recurrent encoder and decoder.
    teacher_forcing
        Probability of reading the true previous value at a decoder step during training.
    use_time
        Add the time since the previous step as an input; ``None``: when steps are uneven.
    {common}

    Returns
    -------
    The trained :class:`~scnapse.models.SequenceModel`; apply it with :func:`forecast`.
    """
    model = SequenceModel("forecast", cell=cell, hidden=hidden, n_layers=n_layers, horizon=horizon,
                          teacher_forcing=teacher_forcing, use_time=use_time, **train_options)
    return model.fit(adata, sequence_key=sequence_key, length_key=length_key, progress=progress,
                     callback=callback, cancel=cancel)


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
    ``None`` or the copy. Writes ``obsm["forecast"]`` (n, horizon, features) in the data's units
    and ``uns["forecast"] = {"params", "features"}``.
    """
    model = _model(model)
    model._require_fitted("forecast")
    pred = model.forecast(adata, sequence_key=sequence_key, length_key=length_key)
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = pred
    adata.uns[key_added] = sanitize_for_uns({"params": {k: v for k, v in model.params.items() if k != "environment"},
                                             "features": list(model.features)})
    logger.info(f"    added 'obsm[{key_added!r}]' ({pred.shape[1]} steps × {pred.shape[2]} features)")
    return adata if copy else None


for _f in (sequence_embedding, train_sequence_classifier, train_forecaster):
    _f.__doc__ = _f.__doc__.format(common=_COMMON)
