from __future__ import annotations

from collections.abc import Sequence

from anndata import AnnData

from .._anndata import copy_of, write_embedding
from ..models.autoencoder import Autoencoder
from ..pipeline.registry import EMBEDDING_METRICS, step
from ..train import RunOptions
from ._common import model_default, train_model


@step("scnapse.tl.autoencoder", trains=True, metrics=EMBEDDING_METRICS)
def autoencoder(
    adata: AnnData,
    *,
    n_latent: int = 16,
    hidden: Sequence[int] = model_default(Autoencoder, "hidden"),
    variational: bool | None = None,
    beta: float = 1.0,
    log_normalize: bool | None = None,
    scale: bool | None = None,
    pca_init: bool = True,
    batch_key: str | None = None,
    categorical_covariate_keys: Sequence[str] | None = None,
    continuous_covariate_keys: Sequence[str] | None = None,
    batch_mmd: float | None = None,
    layer: str | None = None,
    use_highly_variable: bool | None = None,
    key_added: str | None = None,
    copy: bool = False,
    run: RunOptions | None = None,
    **options,
) -> AnnData | None:
    """Embed cells with an autoencoder, next to ``sc.pp.pca`` / ``sc.tl.umap``.

    Give raw counts or log-normalised data (``sc.pp.normalize_total`` + ``sc.pp.log1p``):

    - **raw counts** (in ``X``, or ``layer="counts"``): a variational autoencoder with a
      negative-binomial likelihood (``cost="nb"``), as scVI; the encoder reads log-normalised counts.
    - **log-normalised** (or any other real-valued) data: an autoencoder with ``cost="mse"``.

    Either way training starts from PCA's solution (``pca_init``). What each choice does, and the
    measurements behind the defaults, are in :class:`scnapse.models.Autoencoder`.

    Parameters
    ----------
    adata
        Cells × genes. Dense, sparse or backed ``X``; not modified except for the keys written.
    n_latent
        Size of the embedding.
    hidden
        Widths of the encoder's hidden layers; the decoder mirrors them.
    variational
        Train a VAE (embedding = posterior mean). ``None``: a VAE with the count costs (the
        default for raw counts), a plain autoencoder otherwise.
    beta
        Weight of the VAE's KL term.
    log_normalize, scale
        Input transforms; see :class:`scnapse.models.Autoencoder`.
    pca_init
        Start training from PCA's solution (linear paths set to the top ``n_latent`` principal
        components, nonlinear layers at zero); ``False``: a plain MLP autoencoder.
    batch_key
        An ``adata.obs`` column naming each cell's batch (sample, donor, run, technology). The
        encoder and decoder are given the batch and a penalty (``batch_mmd``) pulls the batches'
        codes together, so the code holds what the batches share (see docs/batches.md); the PCA
        start is then computed on batch-centred data. New batches
        are added later with :func:`scnapse.tl.map_query`.
    categorical_covariate_keys, continuous_covariate_keys
        ``adata.obs`` columns the decoder is conditioned on as well (one-hot categories;
        standardised numbers, e.g. percent mitochondrial).
    batch_mmd
        Weight of the penalty that pulls the batches' codes together (maximum mean discrepancy
        between each batch and the rest); ``None``: 0.01 with ``batch_key``, 0 without. Raise it
        for stronger mixing, lower it if batch-specific cell types merge.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_highly_variable
        Use only ``adata.var['highly_variable']`` genes; ``None``: if that column exists.
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_autoencoder']`` and ``uns['autoencoder']``.
    copy
        Work on a copy and return it, leaving ``adata`` untouched.
    run
        How training runs (progress bar, callback, cancel, precision, checkpoints and resume…): a
        :class:`scnapse.train.RunOptions`; its fields may also be given as keywords
        (``checkpoint_dir="ckpt"``, ``resume=True``: ``scnapse run --resume`` sets it).
    **options
        :class:`scnapse.train.TrainConfig` fields (``cost``, ``lr``, ``max_epochs``, ``seed``…).
        ``cost`` ``None`` (default): ``nb`` for raw counts, ``mse`` otherwise.

    Returns
    -------
    AnnData or None
        ``None``, or the annotated copy with ``copy=True``. Writes ``obsm['X_autoencoder']`` (cells ×
        n_latent) and ``uns['autoencoder']`` = ``{"params": every resolved choice, seed, device and
        package versions, "history": train/validation loss per epoch}``.
    """
    if copy:
        adata = copy_of(adata)
    model = train_model(
        Autoencoder, adata, run=run, options=options, fit={"layer": layer, "use_highly_variable": use_highly_variable},
        n_latent=n_latent, hidden=hidden, variational=variational, beta=beta, log_normalize=log_normalize,
        scale=scale, pca_init=pca_init, batch_key=batch_key, categorical_covariate_keys=categorical_covariate_keys,
        continuous_covariate_keys=continuous_covariate_keys, batch_mmd=batch_mmd,
    )
    write_embedding(adata, model, model.transform(adata, layer=layer), key_added=key_added,
                    default_obsm="X_autoencoder", default_uns="autoencoder")
    return adata if copy else None
