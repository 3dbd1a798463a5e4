from __future__ import annotations

import os
from typing import Literal

from anndata import AnnData

from .._anndata import write_embedding
from ..models.autoencoder import Autoencoder
from ..pipeline.registry import step
from ._annotate import annotation_model


@step("scnapse.tl.map_query", takes_model=True, returns_model=True)
def map_query(
    adata: AnnData,
    model: Autoencoder | str | os.PathLike,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    max_epochs: int | None = None,
    lr: float = 0.1,
    batch_size: int = 256,
    batch_mmd: float | None = None,
    init: Literal["mean", "zeros"] = "mean",
    rescale: bool = True,
    seed: int = 0,
    key_added: str | None = None,
) -> Autoencoder:
    """Map new cells onto a trained batch-aware autoencoder, reference weights frozen.

    The query's batches the reference does not know get their own parameters (their columns of
    the encoder's and decoder's batch paths, and a scale of the encoder's first layer), learnt on
    the query's cells while every reference weight stays exactly as it was (as scArches does); cells of known batches use theirs. A penalty
    on the maximum mean discrepancy between the query's codes and reference codes kept with the
    model pulls the query onto the reference. Genes are matched by name as in
    :meth:`scnapse.models.Autoencoder.transform`.

    Parameters
    ----------
    adata
        The query: cells × genes, in the form the reference was trained on (raw counts, or log data).
    model
        A :class:`~scnapse.models.Autoencoder` trained with ``batch_key``, or the folder it was
        saved to.
    batch_key
        ``adata.obs`` column with the query's batches; default the reference's ``batch_key``.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    max_epochs
        Passes over the query's cells of new batches; ``None``: enough for about 50 optimiser
        steps, at least 2.
    lr, batch_size, seed
        Training of the new batches' parameters (Adam).
    batch_mmd
        Weight of the penalty pulling the query's codes onto the reference codes; ``None``: 0.3
        (0 for a model saved without reference codes).
    init
        Start of the new batches' parameters: ``"mean"`` (the average reference batch) or ``"zeros"``.
    rescale
        The new batches also learn a scale for each unit of the encoder's first layer (1 for every
        reference batch), besides their shift.
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_autoencoder']`` and ``uns['autoencoder']``.

    Returns
    -------
    Autoencoder
        The mapped model (knows the reference's and the query's batches; save it with
        ``.save(path)``). Writes ``obsm['X_autoencoder']`` and ``uns['autoencoder']`` (its
        ``params["map_query"]`` records the new batches, the options, epochs, time and loss) into
        ``adata``. How the defaults were chosen: docs/batches.md.
    """
    model, _ = annotation_model(model, Autoencoder)
    mapped = model.map_query(adata, batch_key=batch_key, layer=layer, max_epochs=max_epochs, lr=lr,
                             batch_size=batch_size, batch_mmd=batch_mmd, init=init, rescale=rescale, seed=seed)
    write_embedding(adata, mapped, mapped.transform(adata, layer=layer), key_added=key_added,
                    default_obsm="X_autoencoder", default_uns="autoencoder")
    return mapped
