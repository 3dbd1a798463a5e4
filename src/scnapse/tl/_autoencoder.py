from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from anndata import AnnData

from .._anndata import write_embedding
from ..models.autoencoder import Autoencoder
from ..pipeline.registry import EMBEDDING_METRICS, step


@step("scnapse.tl.autoencoder", trains=True, metrics=EMBEDDING_METRICS)
def autoencoder(
    adata: AnnData,
    *,
    n_latent: int = 16,
    hidden: Sequence[int] = (128,),
    variational: bool | None = None,
    beta: float = 1.0,
    log_normalize: bool | None = None,
    scale: bool | None = None,
    pca_init: bool = True,
    layer: str | None = None,
    use_highly_variable: bool | None = None,
    key_added: str | None = None,
    progress: bool = True,
    callback: Callable | None = None,
    cancel: threading.Event | None = None,
    precision: str | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    copy: bool = False,
    **train_options,
) -> AnnData | None:
    """Embed cells with an autoencoder, next to ``sc.pp.pca`` / ``sc.tl.umap``.

    Give raw counts or log-normalised data (``sc.pp.normalize_total`` + ``sc.pp.log1p``):

    - **raw counts** (in ``X``, or ``layer="counts"``): a variational autoencoder with a
      negative-binomial likelihood (``cost="nb"``), as scVI; the encoder reads log-normalised counts.
      On simulated counts this kept cell types apart far better than the mse autoencoder on the
      log data (15-NN accuracy 0.84 vs 0.70; scVI 0.79), and within 0.03 of it on the PBMC sets.
    - **log-normalised** (or any other real-valued) data: an autoencoder with ``cost="mse"``.

    Either way training starts from PCA's solution (``pca_init``).

    Parameters
    ----------
    adata
        Cells × genes. Dense, sparse or backed ``X``; not modified except for the keys written.
    n_latent
        Size of the embedding (16: on the PBMC sets it kept finer cell types apart than 10).
    hidden
        Widths of the encoder's hidden layers; the decoder mirrors them.
    variational, beta
        Train a VAE (embedding = posterior mean); ``beta`` weighs its KL term. ``None``: a VAE
        with the count costs (the default for raw counts), a plain autoencoder otherwise.
    log_normalize, scale
        Input transforms; see :class:`scnapse.models.Autoencoder`.
    pca_init
        Start training from PCA's solution (linear paths set to the top ``n_latent`` principal
        components, nonlinear layers at zero); ``False``: a plain MLP autoencoder. See
        :class:`scnapse.models.Autoencoder` for the measurements behind the default.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_highly_variable
        Use only ``adata.var['highly_variable']`` genes; ``None``: if that column exists.
    key_added
        ``obsm[key_added]`` gets the embedding and ``uns[key_added]`` the record; default
        ``obsm['X_autoencoder']`` and ``uns['autoencoder']``.
    progress
        Show a progress bar.
    callback
        Called with an :class:`~scnapse.train.EpochReport` after each epoch; return ``False`` to stop.
    cancel
        A ``threading.Event``; setting it stops training and keeps the best model so far.
    precision
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (GPU only): mixed-precision training.
    checkpoint_dir, checkpoint_every, resume
        Save the whole training state in ``checkpoint_dir`` every ``checkpoint_every`` epochs;
        with ``resume=True`` an interrupted run continues from there and ends as the uninterrupted
        run would have (``scnapse run --resume`` sets it).
    copy
        Work on a copy and return it, leaving ``adata`` untouched.
    **train_options
        :class:`~scnapse.train.TrainConfig` fields: ``cost`` (default: ``nb`` for raw counts,
        ``mse`` otherwise), ``activation``,
        ``dropout``, ``input_noise``, ``l1``, ``l2``, ``batch_norm``, ``optimizer``, ``lr``,
        ``momentum``, ``weight_decay``, ``batch_size``, ``max_epochs``, ``early_stopping``,
        ``validation_fraction``, ``lr_schedule``, ``seed``, ``device``, ``deterministic``.

    Returns
    -------
    ``None``, or the annotated copy with ``copy=True``. Writes ``obsm['X_autoencoder']`` (cells ×
    n_latent) and ``uns['autoencoder']`` = ``{"params": every resolved choice, seed, device and
    package versions, "history": train/validation loss per epoch}``.
    """
    model = Autoencoder(
        n_latent, hidden=hidden, variational=variational, beta=beta, log_normalize=log_normalize,
        scale=scale, pca_init=pca_init, **train_options,
    )
    if copy:
        adata = adata.copy()
    model.fit(adata, layer=layer, use_highly_variable=use_highly_variable, progress=progress,
              callback=callback, cancel=cancel, precision=precision, checkpoint_dir=checkpoint_dir,
              checkpoint_every=checkpoint_every, resume=resume)
    write_embedding(adata, model, model.transform(adata, layer=layer), key_added=key_added,
                    default_obsm="X_autoencoder", default_uns="autoencoder")
    return adata if copy else None
