from __future__ import annotations

import os

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
    max_epochs: int = 50,
    lr: float = 3e-2,
    batch_size: int = 256,
    seed: int = 0,
    key_added: str | None = None,
) -> Autoencoder:
    """Map new cells onto a trained batch-aware autoencoder, reference weights frozen.

    The query's batches the reference does not know get their own parameters (their columns of
    the encoder's and decoder's batch paths), learnt on the query's cells while every reference
    weight stays exactly as it was (as scArches does); cells of known batches use theirs. Genes
    are matched by name as in :meth:`scnapse.models.Autoencoder.transform`.

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
    max_epochs, lr, batch_size, seed
        Training of the new batches' parameters (Adam).
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_autoencoder']`` and ``uns['autoencoder']``.

    Returns
    -------
    Autoencoder
        The mapped model (knows the reference's and the query's batches; save it with
        ``.save(path)``). Writes ``obsm['X_autoencoder']`` and ``uns['autoencoder']`` (its
        ``params["map_query"]`` records the new batches, epochs, time and loss) into ``adata``.
    """
    model, _ = annotation_model(model, Autoencoder)
    mapped = model.map_query(adata, batch_key=batch_key, layer=layer, max_epochs=max_epochs, lr=lr,
                             batch_size=batch_size, seed=seed)
    write_embedding(adata, mapped, mapped.transform(adata, layer=layer), key_added=key_added,
                    default_obsm="X_autoencoder", default_uns="autoencoder")
    return mapped
