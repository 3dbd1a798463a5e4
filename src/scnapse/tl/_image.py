"""Image steps on an AnnData of cells (``sn.im.cells_from_labels``): a CNN embedding, a CNN
classifier trained from a few annotated cells, and its predictions written back."""

from __future__ import annotations

import os
from collections.abc import Sequence

from anndata import AnnData

from .._anndata import copy_of, renamed_adata, write_embedding
from ..models.image import DEFAULT_FEATURES, ImageModel
from ..pipeline.registry import EMBEDDING_METRICS, step
from ..train import RunOptions
from ._annotate import (
    annotation_model,
    check_adata_arg,
    check_fraction,
    write_annotation,
)
from ._common import ClassWeight, model_default, train_model


@step("scnapse.tl.image_embedding", trains=True, metrics=EMBEDDING_METRICS)
@renamed_adata("cells")
def image_embedding(
    adata: AnnData,
    *,
    n_latent: int = 16,
    method: str = "autoencoder",
    channels: Sequence[int] = model_default(ImageModel, "channels"),
    crops_key: str = "crops",
    key_added: str | None = None,
    copy: bool = False,
    run: RunOptions | None = None,
    **options,
) -> AnnData | None:
    """Embed cells by a CNN on their crops (a conv autoencoder, or contrastive), next to ``sc.pp.pca``.

    Then ``sc.pp.neighbors(adata, use_rep="X_cnn")``, ``sc.tl.umap``, ``sc.tl.leiden`` as usual.

    Parameters
    ----------
    adata
        From :func:`scnapse.im.cells_from_labels` (formerly ``cells=``): crops in
        ``obsm[crops_key]`` (cells × channels × size × size). Not modified except for the keys written.
    n_latent
        Size of the embedding.
    method
        ``"autoencoder"`` (a convolutional autoencoder; its code is the embedding) or
        ``"contrastive"`` (SimCLR-style: two augmented views of each crop must embed alike; it
        picks up texture and pattern that the autoencoder's pixel reconstruction misses, and
        needs ``augment``). See :class:`scnapse.models.ImageModel`.
    channels
        Feature maps of the convolution blocks (each halves the crop).
    crops_key
        The ``obsm`` key of the crops.
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_cnn']`` and ``uns['cnn']``.
    copy
        Work on a copy and return it, leaving ``adata`` untouched.
    run
        How training runs (progress bar, callback, cancel, precision, checkpoints and resume…): a
        :class:`scnapse.train.RunOptions`; its fields may also be given as keywords.
    **options
        :class:`scnapse.train.TrainConfig` fields (``cost``, ``augment``, ``lr``, ``max_epochs``,
        ``seed``…); the image defaults are listed in :class:`scnapse.models.ImageModel`.

    Returns
    -------
    AnnData or None
        ``None``, or the annotated copy with ``copy=True``. Writes ``obsm['X_cnn']`` (cells ×
        n_latent) and ``uns['cnn'] = {"params", "history"}``.
    """
    if copy:
        adata = copy_of(adata)
    model = train_model(ImageModel, adata, run=run, options=options, fit={"crops_key": crops_key},
                        task="embed", method=method, n_latent=n_latent, channels=channels)
    write_embedding(adata, model, model.transform(adata, crops_key=crops_key), key_added=key_added,
                    default_obsm="X_cnn", default_uns="cnn")
    return adata if copy else None


@step("scnapse.tl.train_image_classifier", trains=True, returns_model=True)
@renamed_adata("cells")
def train_image_classifier(
    adata: AnnData,
    *,
    labels_key: str,
    augment: Sequence[str] = ("flip", "rot90", "intensity"),
    channels: Sequence[int] = model_default(ImageModel, "channels"),
    class_weight: ClassWeight | None = "balanced",
    pretrained: ImageModel | None = None,
    crops_key: str = "crops",
    features: str | None = DEFAULT_FEATURES,
    linear_init: bool = True,
    run: RunOptions | None = None,
    **options,
) -> ImageModel:
    """Train a CNN classifier on the annotated cells; return the model.

    Annotate a few cells per class in ``obs[labels_key]`` and leave the rest ``NaN``; then
    :func:`annotate_images` labels them all.

    Parameters
    ----------
    adata
        From :func:`scnapse.im.cells_from_labels` (formerly ``cells=``); not modified.
    labels_key
        The ``obs`` column with the annotation (``NaN`` = not annotated). At least two classes.
    augment
        Dataset augmentation while training: ``flip``, ``rot90``, ``intensity`` (brightness /
        contrast jitter), ``noise`` (Gaussian). ``()`` for none.
    channels
        Feature maps of the convolution blocks.
    class_weight
        ``"balanced"`` (each class weighs the same), ``"sampling"`` (class-balanced mini-batches,
        where the model supports them) or ``None``.
    pretrained
        An :class:`~scnapse.models.ImageModel` (e.g. ``ImageModel("embed").fit(cells)``, trained on
        all cells) whose convolutions start the classifier: semi-supervised use.
    crops_key
        The ``obsm`` key of the crops.
    features
        The ``obsm`` key of each cell's hand-made features (``"features"``: the regionprops shape
        and intensity statistics that :func:`scnapse.im.cells_from_labels` writes), read beside
        the crops through a logistic-regression path (standardised with the training cells'
        mean / std, stored in the model). ``None``: the crops alone. With the default, cells
        without ``obsm["features"]`` use the crops alone (the log says so).
    linear_init
        Start from logistic regression on the standardised features (scikit-learn, C=1), with
        the CNN's head at zero: the CNN learns what the features miss. If training ends worse
        (validation cross-entropy) than the start, the start is kept
        (``params["kept_linear_start"]``). ``model.baseline`` (and ``uns[key]["baseline"]`` after
        :func:`annotate_images`) holds a random forest's macro-F1 and accuracy (200 trees) on the
        same features and the classifier's own held-out cells, beside the network's.
    run
        How training runs (progress bar, callback, cancel, precision, checkpoints and resume…): a
        :class:`scnapse.train.RunOptions`; its fields may also be given as keywords.
    **options
        :class:`scnapse.train.TrainConfig` fields (``lr``, ``max_epochs``, ``seed``…); the image
        classifier's defaults are listed in :class:`scnapse.models.ImageModel`.

    Returns
    -------
    ImageModel
        The trained :class:`~scnapse.models.ImageModel` (``model.history``, ``model.params``,
        ``model.save(path)``).
    """
    return train_model(ImageModel, adata, run=run, options=options,
                       fit={"labels_key": labels_key, "crops_key": crops_key, "pretrained": pretrained},
                       task="classify", channels=channels, class_weight=class_weight,
                       augment=tuple(augment or ()), features=features, linear_init=linear_init)


@step("scnapse.tl.annotate_images", takes_model=True)
@renamed_adata("cells")
def annotate_images(
    adata: AnnData,
    model: ImageModel | str | os.PathLike,
    *,
    key_added: str = "predicted",
    min_confidence: float = 0.0,
    crops_key: str = "crops",
    copy: bool = False,
) -> AnnData | None:
    """Predict every cell's class with a trained image classifier.

    Parameters
    ----------
    adata
        From :func:`scnapse.im.cells_from_labels` (formerly ``cells=``), with crops made like the
        training crops (same size, channels, normalisation).
    model
        From :func:`train_image_classifier`, or the folder it was saved to.
    key_added
        Base name of the keys written: ``"predicted"`` by default, as in every ``annotate*``
        step (before, this step wrote ``"predicted_class"``: pass ``key_added="predicted_class"``
        for the old keys).
    min_confidence
        Cells whose top probability is below this get ``"Unassigned"`` (0, the default: never;
        the CNN's probabilities are not calibrated).
    crops_key
        The ``obsm`` key of the crops.
    copy
        Work on a copy and return it.

    Returns
    -------
    AnnData or None
        ``None``, or the annotated copy with ``copy=True``. Writes ``obs[key_added]`` (categorical: the
        classes and ``"Unassigned"``), ``obs[key_added + "_confidence"]`` (the winning probability),
        ``obsm[key_added + "_probabilities"]`` (a DataFrame, one column per class),
        ``uns[key_added + "_colors"]`` (one colour per category, for plots and
        :func:`scnapse.im.class_table`) and ``uns[key_added]`` (classes, parameters, the model's parameters,
        and ``"baseline"``: a random forest on the same features beside the network, when the
        classifier reads features).
    """
    model, model_path = annotation_model(model, ImageModel)
    check_adata_arg(adata)
    min_confidence = check_fraction("min_confidence", min_confidence)
    proba = model.predict_proba(adata, crops_key=crops_key)
    if copy:
        adata = copy_of(adata)
    write_annotation(adata, proba, model.classes, model, key=key_added, min_confidence=min_confidence,
                     params={"crops_key": crops_key, "model": model_path},
                     **({"baseline": model.baseline} if model.baseline else {}))
    return adata if copy else None
