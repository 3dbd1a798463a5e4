"""Image steps on an AnnData of cells (``sn.im.cells_from_labels``): a CNN embedding, a CNN
classifier trained from a few annotated cells, and its predictions written back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import sanitize_for_uns, write_embedding
from .._settings import logger
from ..models.image import ImageModel
from ..pipeline.registry import EMBEDDING_METRICS, step


@step("scnapse.tl.image_embedding", trains=True, metrics=EMBEDDING_METRICS)
def image_embedding(
    cells: AnnData,
    *,
    n_latent: int = 16,
    method: str = "autoencoder",
    channels: Sequence[int] = (16, 32, 64),
    crops_key: str = "crops",
    key_added: str | None = None,
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    copy: bool = False,
    **train_options,
) -> AnnData | None:
    """Embed cells by a CNN on their crops (a conv autoencoder, or contrastive), next to ``sc.pp.pca``.

    Then ``sc.pp.neighbors(cells, use_rep="X_cnn")``, ``sc.tl.umap``, ``sc.tl.leiden`` as usual.

    Parameters
    ----------
    cells
        From :func:`scnapse.im.cells_from_labels`: crops in ``obsm[crops_key]`` (cells ×
        channels × size × size). Not modified except for the keys written.
    n_latent
        Size of the embedding.
    method
        ``"autoencoder"`` (a convolutional autoencoder; its code is the embedding) or
        ``"contrastive"`` (SimCLR-style: two augmented views of each crop must embed alike; it
        picks up texture and pattern that the autoencoder's pixel reconstruction misses —
        see the README's benchmark — and needs ``augment``, default all four).
    channels
        Feature maps of the convolution blocks (each halves the crop).
    crops_key
        The ``obsm`` key of the crops.
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_cnn']`` and ``uns['cnn']``.
    progress, callback, cancel
        A progress bar; a function called with each epoch's report (return ``False`` to stop); a
        ``threading.Event`` that stops training (the best model so far is kept).
    copy
        Work on a copy and return it, leaving ``cells`` untouched.
    **train_options
        :class:`~scnapse.train.TrainConfig` fields: ``cost`` (autoencoder: ``mse`` default, or
        ``bce``: crops in [0, 1]), ``activation``, ``dropout``, ``input_noise`` (denoising), ``augment``,
        ``l1``, ``l2``, ``batch_norm`` (True), ``optimizer``, ``lr`` (2e-3), ``batch_size`` (64),
        ``max_epochs``, ``early_stopping``, ``validation_fraction``, ``seed``, ``device``…

    Returns
    -------
    ``None``, or the annotated copy with ``copy=True``. Writes ``obsm['X_cnn']`` (cells ×
    n_latent) and ``uns['cnn'] = {"params", "history"}``.
    """
    model = ImageModel("embed", method=method, n_latent=n_latent, channels=channels, **train_options)
    if copy:
        cells = cells.copy()
    model.fit(cells, crops_key=crops_key, progress=progress, callback=callback, cancel=cancel)
    write_embedding(cells, model, model.transform(cells, crops_key=crops_key), key_added=key_added,
                    default_obsm="X_cnn", default_uns="cnn")
    return cells if copy else None


@step("scnapse.tl.train_image_classifier", trains=True, returns_model=True)
def train_image_classifier(
    cells: AnnData,
    *,
    labels_key: str,
    augment: Sequence[str] = ("flip", "rot90", "intensity"),
    channels: Sequence[int] = (16, 32, 64),
    class_weight: str | None = "balanced",
    pretrained: ImageModel | None = None,
    crops_key: str = "crops",
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    **train_options,
) -> ImageModel:
    """Train a CNN classifier on the annotated cells; return the model.

    Annotate a few cells per class in ``obs[labels_key]`` and leave the rest ``NaN``; then
    :func:`annotate_images` labels them all.

    Parameters
    ----------
    cells
        From :func:`scnapse.im.cells_from_labels`; not modified.
    labels_key
        The ``obs`` column with the annotation (``NaN`` = not annotated). At least two classes.
    augment
        Dataset augmentation while training: ``flip``, ``rot90``, ``intensity`` (brightness /
        contrast jitter), ``noise`` (Gaussian). ``()`` for none.
    channels
        Feature maps of the convolution blocks.
    class_weight
        ``"balanced"`` (each class weighs the same) or ``None``.
    pretrained
        An :class:`~scnapse.models.ImageModel` (e.g. ``ImageModel("embed").fit(cells)``, trained on
        all cells) whose convolutions start the classifier: semi-supervised use.
    crops_key
        The ``obsm`` key of the crops.
    progress, callback, cancel
        As for :func:`image_embedding`.
    **train_options
        :class:`~scnapse.train.TrainConfig` fields; image defaults: ``batch_norm=True``,
        ``batch_size=64``, ``lr=2e-3``, ``validation_fraction=0.2`` (of the annotated cells,
        stratified), ``early_stopping=15``; an epoch passes at least 256 crops (the annotated cells
        repeated, augmented differently); ``max_epochs`` ``None``: about 300 steps.

    Returns
    -------
    The trained :class:`~scnapse.models.ImageModel` (``model.history``, ``model.params``,
    ``model.save(path)``).
    """
    model = ImageModel("classify", channels=channels, class_weight=class_weight, augment=tuple(augment or ()),
                       **train_options)
    return model.fit(cells, labels_key=labels_key, crops_key=crops_key, pretrained=pretrained,
                     progress=progress, callback=callback, cancel=cancel)


@step("scnapse.tl.annotate_images", takes_model=True)
def annotate_images(
    cells: AnnData,
    model: ImageModel,
    *,
    key_added: str = "predicted_class",
    crops_key: str = "crops",
    copy: bool = False,
) -> AnnData | None:
    """Predict every cell's class with a trained image classifier.

    Parameters
    ----------
    cells
        From :func:`scnapse.im.cells_from_labels`, with crops made like the training crops (same
        size, channels, normalisation).
    model
        From :func:`train_image_classifier` or ``sn.models.ImageModel.load(path)``.
    key_added
        Name of the written columns.
    crops_key
        The ``obsm`` key of the crops.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None``, or the annotated copy with ``copy=True``. Writes ``obs[key_added]`` (categorical),
    ``obs[f"{key_added}_confidence"]`` (the winning probability), ``obsm[f"{key_added}_probabilities"]``
    (cells × classes), ``uns[f"{key_added}_colors"]`` (one colour per class, for plots and
    :func:`scnapse.im.class_table`) and ``uns[key_added]`` (classes, model parameters).
    """
    from ..im._paint import PALETTE

    if not isinstance(model, ImageModel):
        raise TypeError(f"model must be an sn.models.ImageModel, not {type(model).__name__}.")
    proba = model.predict_proba(cells, crops_key=crops_key)
    if copy:
        cells = cells.copy()
    codes = proba.argmax(axis=1)
    cells.obs[key_added] = pd.Categorical.from_codes(codes, categories=model.classes)
    cells.obs[f"{key_added}_confidence"] = proba[np.arange(len(codes)), codes]
    cells.obsm[f"{key_added}_probabilities"] = proba
    cells.uns[f"{key_added}_colors"] = [PALETTE[i % len(PALETTE)] for i in range(len(model.classes))]
    cells.uns[key_added] = sanitize_for_uns({"classes": list(model.classes),
                                             "model_params": {k: v for k, v in model.params.items()
                                                              if k != "environment"}})
    logger.info(f"    added 'obs[{key_added!r}]', 'obs[{key_added + '_confidence'!r}]', "
                f"'obsm[{key_added + '_probabilities'!r}]'")
    return cells if copy else None
