"""``Autoencoder``: dimensionality reduction by an (optionally variational / denoising) autoencoder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._anndata import check_adata, gene_index, gene_mask, get_matrix, reindex_block
from ..nn.autoencoder import AutoencoderModule
from ..nn.losses import (
    COUNT_COSTS,
    batch_mmd,
    check_data_for_cost,
    gaussian_kl,
    reconstruction_loss,
    reference_mmd,
)
from ..train import Matrix, RunOptions, TrainConfig
from ..train.data import is_backed, iter_row_chunks, summarize
from ._base import BaseModel, Prepared, check_count, check_number, check_widths
from ._preprocess import (
    Preprocessing,
    check_informative,
    chunks_as_tensors,
    expm1_block,
    first_rows,
    looks_like_counts,
    query_reading,
    training_form,
)

AE_COSTS = ("mse", "bce", "kl", "hellinger", "poisson", "nb")
#: widths of the encoder's hidden layers (the decoder mirrors them) unless ``hidden=`` says otherwise
DEFAULT_HIDDEN = (128,)
#: weight of the batch-mixing penalty with ``batch_key`` (see ``Autoencoder``'s ``batch_mmd``)
DEFAULT_BATCH_MMD = 0.01
#: a batch-aware model keeps the codes of at most this many training cells (``reference_codes``)
REFERENCE_CODES = 1000
#: ``map_query`` with ``max_epochs=None`` makes enough passes over the query's new cells for about
#: this many optimiser steps (at least MAP_QUERY_MIN_EPOCHS passes); see :func:`map_query_epochs`
MAP_QUERY_STEPS = 50
MAP_QUERY_MIN_EPOCHS = 2
#: ``map_query``'s weight (``batch_mmd=None``) of the MMD between the query's codes and the
#: reference codes (each step: the mini-batch against as many reference codes, drawn at random)
MAP_QUERY_BATCH_MMD = 0.3
#: how ``map_query`` starts the new batches' parameters
MAP_QUERY_INITS = ("mean", "zeros")


def default_max_epochs(n_obs: int) -> int:
    """Enough passes for ~30,000 mini-batch steps on small data, fewer on large (early stopping
    usually ends training well before): 400 up to 10,000 cells, then ∝ 1/cells, at least 10."""
    return int(np.clip(round(4_000_000 / max(n_obs, 1)), 10, 400))


def map_query_epochs(n_cells: int, batch_size: int) -> int:
    """Passes over ``n_cells`` query cells for about :data:`MAP_QUERY_STEPS` optimiser steps of
    ``batch_size`` cells, at least :data:`MAP_QUERY_MIN_EPOCHS`: with 256 cells a step, 50 passes
    of 1 step for 200 cells, 25 passes of 2 steps for 400, 2 passes of 40 steps for 10,000."""
    steps_per_pass = -(-max(int(n_cells), 1) // max(int(batch_size), 1))
    return max(MAP_QUERY_MIN_EPOCHS, -(-MAP_QUERY_STEPS // steps_per_pass))


def check_matrix_values(summary, *, what: str) -> None:
    if summary.n_nonfinite:
        raise ValueError(
            f"{what} holds {summary.n_nonfinite} NaN or infinite value(s). Remove or impute them "
            "first (e.g. adata.X = np.nan_to_num(adata.X)), or pick another layer=."
        )


#: PCA for ``pca_init`` runs on at most this many training cells, and on a block of at most
#: PCA_MAX_VALUES values (cells × genes); fewer cells when there are many genes.
PCA_MAX_CELLS = 5_000
PCA_MAX_VALUES = 10_000_000


def principal_components(matrix: Matrix, rows: np.ndarray, prep: Preprocessing, k: int,
                         seed: int, groups: np.ndarray | None = None):
    """``(mean, components, n_cells)``: the top ``k`` principal components (rows, unit length,
    sign fixed so the largest loading is positive) of ``prep(matrix[rows])``, computed exactly
    (eigendecomposition in float64 on the CPU) on a seeded sample of the rows.

    ``groups`` (a code per row of ``matrix``, e.g. the batch): each group is centred on its own
    mean before the components are found, and the groups' means (groups × genes; the overall
    mean for a group not in the sample) come fourth."""
    n_vars = matrix.shape[1]
    n = int(min(len(rows), PCA_MAX_CELLS, max(1000, PCA_MAX_VALUES // max(n_vars, 1))))
    rng = np.random.default_rng([int(seed), 7])
    sample = np.sort(rng.choice(np.asarray(rows), size=n, replace=False)) if n < len(rows) else np.sort(rows)
    blocks = []
    for start in range(0, len(sample), 4096):
        idx = torch.as_tensor(sample[start:start + 4096], dtype=torch.long, device=matrix.device)
        blocks.append(prep(matrix.take(idx)).cpu())
    X = torch.cat(blocks)
    mean = X.double().mean(0)
    group_means = None
    if groups is None:
        X -= mean.float()  # centred in float32 (the products' cost); eigendecomposition in float64
    else:
        codes = torch.as_tensor(np.asarray(groups)[sample], dtype=torch.long)
        n_groups = int(np.asarray(groups).max()) + 1
        group_means = mean.float().repeat(n_groups, 1)
        for g in range(n_groups):
            sel = codes == g
            if bool(sel.any()):
                group_means[g] = X[sel].double().mean(0).float()
        X -= group_means[codes]
    k = int(min(k, X.shape[0] - 1, n_vars))
    if k < 1:
        out = mean.float(), torch.zeros(0, n_vars), len(sample)
        return out if groups is None else (*out, group_means)
    if n_vars <= X.shape[0]:
        _, vecs = torch.linalg.eigh((X.T @ X).double())
        comps = vecs[:, -k:].flip(1).T
    else:  # fewer cells than genes: through the cells' Gram matrix
        vals, vecs = torch.linalg.eigh((X @ X.T).double())
        u, v = vecs[:, -k:].flip(1), vals[-k:].flip(0).clamp_min(1e-12)
        comps = (X.double().T @ u / v.sqrt()).T
    comps = comps / comps.norm(dim=1, keepdim=True).clamp_min(1e-12)
    big = comps.abs().argmax(dim=1)
    comps *= torch.sign(comps[torch.arange(k), big]).unsqueeze(1)
    if groups is not None:
        return mean.float(), comps.float(), len(sample), group_means
    return mean.float(), comps.float(), len(sample)


# -- batches and covariates -----------------------------------------------------------------------
def _obs_column(adata: AnnData, key: str, what: str) -> pd.Series:
    if not isinstance(key, str):
        raise TypeError(f"{what}={key!r} must be the name of an adata.obs column.")
    if key not in adata.obs.columns:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise ValueError(f"{what}={key!r} is not a column of adata.obs; its columns are: {cols}.")
    col = adata.obs[key]
    n_nan = int(col.isna().sum())
    if n_nan:
        raise ValueError(f"adata.obs[{key!r}] ({what}) holds {n_nan} missing value(s) (NaN); fill them "
                         f"(e.g. adata.obs[{key!r}] = adata.obs[{key!r}].astype(str)) or drop those cells.")
    return col


def _key_list(keys, what: str) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    keys = list(keys)
    if not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{what}={keys!r} must be adata.obs column names.")
    return keys


def fit_conditioning(adata: AnnData, batch_key, categorical_keys, continuous_keys) -> dict | None:
    """What a batch-aware autoencoder records about its batches and covariates (``None``: none)."""
    cat_keys = _key_list(categorical_keys, "categorical_covariate_keys")
    cont_keys = _key_list(continuous_keys, "continuous_covariate_keys")
    if batch_key is None and not cat_keys and not cont_keys:
        return None
    info = {"batch_key": batch_key, "batches": [], "categorical_covariate_keys": cat_keys,
            "categorical_categories": {}, "continuous_covariate_keys": cont_keys,
            "continuous_mean": [], "continuous_std": []}
    if batch_key is not None:
        col = _obs_column(adata, batch_key, "batch_key").astype(str)
        counts = col.value_counts()
        single = sorted(counts.index[counts < 2])
        if single:
            raise ValueError(f"Batch(es) {single[:10]} of adata.obs[{batch_key!r}] hold a single cell; a batch needs "
                             "at least 2 cells to learn its parameters. Merge or drop them.")
        info["batches"] = sorted(counts.index)
    for key in cat_keys:
        col = _obs_column(adata, key, "categorical_covariate_keys").astype(str)
        info["categorical_categories"][key] = sorted(col.unique())
    for key in cont_keys:
        col = _obs_column(adata, key, "continuous_covariate_keys")
        try:
            v = pd.to_numeric(col).to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"adata.obs[{key!r}] (continuous_covariate_keys) must be numeric; give a "
                             "categorical column in categorical_covariate_keys instead.") from None
        if not np.isfinite(v).all():
            raise ValueError(f"adata.obs[{key!r}] (continuous_covariate_keys) holds infinite values.")
        info["continuous_mean"].append(float(v.mean()))
        info["continuous_std"].append(float(v.std()) or 1.0)
    return info


def n_conditioning(info: dict | None) -> tuple[int, int]:
    """``(batches, covariate columns)``."""
    if not info:
        return 0, 0
    n_cov = sum(len(c) for c in info["categorical_categories"].values()) + len(info["continuous_covariate_keys"])
    return len(info["batches"]), n_cov


def conditioning(adata: AnnData, info: dict, *, batches: list[str] | None = None) -> torch.Tensor:
    """Cells × (batches + covariate columns): batch one-hot, covariate one-hots, standardised
    continuous covariates. ``batches``: the columns (default: the model's)."""
    batches = info["batches"] if batches is None else batches
    blocks = []
    if info["batch_key"] is not None:
        col = _obs_column(adata, info["batch_key"], "batch_key").astype(str)
        known = pd.Index(batches)
        codes = known.get_indexer(col)
        if (codes < 0).any():
            new = sorted(set(col[codes < 0]))
            raise ValueError(f"adata.obs[{info['batch_key']!r}] holds batch(es) the model was not trained on: "
                             f"{new[:10]} (it knows {list(known[:10])}). Map new batches with "
                             "sn.tl.map_query(adata, model, batch_key=...) (or model.map_query).")
        blocks.append(np.eye(len(known), dtype=np.float32)[codes])
    for key in info["categorical_covariate_keys"]:
        col = _obs_column(adata, key, "categorical_covariate_keys").astype(str)
        known = pd.Index(info["categorical_categories"][key])
        codes = known.get_indexer(col)
        if (codes < 0).any():
            raise ValueError(f"adata.obs[{key!r}] holds categories the model was not trained on: "
                             f"{sorted(set(col[codes < 0]))[:10]} (it knows {list(known[:10])}).")
        blocks.append(np.eye(len(known), dtype=np.float32)[codes])
    for key, m, sd in zip(info["continuous_covariate_keys"], info["continuous_mean"], info["continuous_std"]):
        col = _obs_column(adata, key, "continuous_covariate_keys")
        try:
            v = pd.to_numeric(col).to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"adata.obs[{key!r}] (continuous_covariate_keys) must be numeric.") from None
        blocks.append(((v - m) / sd).astype(np.float32)[:, None])
    return torch.from_numpy(np.concatenate(blocks, axis=1) if blocks else np.zeros((adata.n_obs, 0), np.float32))


class Autoencoder(BaseModel):
    """An autoencoder on expression profiles; its code is the embedding.

    What it fits depends on the data given, unless ``cost`` / ``variational`` say otherwise:

    - **raw counts** (non-negative integers, in ``X`` or ``layer=``): a variational autoencoder
      with a negative-binomial likelihood (``cost="nb"``), the encoder reading log-normalised
      counts — the model scVI uses;
    - **anything else** (log-normalised, scaled, ...): an autoencoder with ``cost="mse"``.

    Either way training starts from PCA (``pca_init``).

    Parameters
    ----------
    n_latent
        Size of the embedding.
    hidden
        Widths of the encoder's hidden layers (the decoder mirrors them).
    variational
        A variational autoencoder (the embedding is the posterior mean); ``beta`` weighs its KL term.
        ``None`` (default): a VAE with the count costs (``nb``, ``poisson``), a plain autoencoder
        otherwise (why: the user guide's "Why these defaults").
    log_normalize
        Turn raw counts into ``log1p(x / total × 10⁴)`` before the encoder. ``None``: when the data
        look like raw counts (non-negative integers), and always for the count costs.
    scale
        Standardise each gene before the encoder (as ``sc.pp.scale``); with ``cost="mse"`` the
        autoencoder then reconstructs the standardised data. ``None``: off. Standardising gives
        rare, noisy genes the weight of informative ones, which gave clearly worse embeddings on
        the PBMC sets (the user guide's "Why these defaults").
    pca_init
        Start from PCA: linear paths beside the encoder and decoder are set to the top
        ``n_latent`` principal components of the (preprocessed) training cells (exact, on up to
        5,000 of them), and the nonlinear layers start at zero, so training begins at PCA's
        solution and learns what it misses; a plain MLP autoencoder learns the weak, cell-type
        directions slowly and its validation loss stops it early (the user guide's "Why these
        defaults"). ``False``: a plain MLP autoencoder.
    batch_key
        ``obs`` column naming each cell's batch. Each batch gets its own shift of the encoder's
        first layer and of the decoder's first layer and output (a per-gene factor for the count
        costs), the PCA start is computed on batch-centred data, and ``batch_mmd`` pulls the
        batches' codes together. New batches are added later with :meth:`map_query`; for it the
        model keeps the codes of up to 1,000 training cells (``reference_codes``, saved with it).
    categorical_covariate_keys, continuous_covariate_keys
        ``obs`` columns the decoder is conditioned on as well (one-hot categories; standardised
        numbers such as percent mitochondrial).
    batch_mmd
        Weight of a penalty on the maximum mean discrepancy between each batch's codes and the
        other batches' codes in every mini-batch (Gaussian kernels at three widths around the
        median distance). ``None``: 0.01 with ``batch_key``, else 0 (off). The penalty ignores
        cell-type composition, so too strong a weight merges types that exist in some batches
        only; how the default was chosen, with the measurements: docs/batches.md.
    **train_options
        Any :class:`~scnapse.train.TrainConfig` field (cost, activation, dropout, input_noise, l1,
        l2, optimizer, lr, ...). ``cost=None`` (default): ``"nb"`` for raw counts, else ``"mse"``.
    """

    kind = "Autoencoder"
    dense = True  # one thread by default on small steps (AUTO_THREAD_CAP)

    def __init__(
        self,
        n_latent: int = 16,
        *,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        variational: bool | None = None,
        beta: float = 1.0,
        log_normalize: bool | None = None,
        scale: bool | None = None,
        pca_init: bool = True,
        batch_key: str | None = None,
        categorical_covariate_keys: Sequence[str] | None = None,
        continuous_covariate_keys: Sequence[str] | None = None,
        batch_mmd: float | None = None,
        **train_options,
    ):
        self.config = self._config_from(None, train_options)
        if self.config.cost is not None and self.config.cost not in AE_COSTS:
            raise ValueError(f"cost={self.config.cost!r} does not fit an autoencoder; choose one of {list(AE_COSTS)}.")
        self.n_latent = check_count(n_latent, "n_latent")
        hidden = check_widths(hidden)
        self.hidden = hidden
        self._variational = None if variational is None else bool(variational)  # the option
        self.variational = self._variational  # resolved by fit
        self.beta = check_number(beta, "beta")
        self.log_normalize = log_normalize
        self.scale = scale
        self.pca_init = bool(pca_init)
        self.batch_key = batch_key
        self.categorical_covariate_keys = _key_list(categorical_covariate_keys, "categorical_covariate_keys")
        self.continuous_covariate_keys = _key_list(continuous_covariate_keys, "continuous_covariate_keys")
        self._batch_mmd = None if batch_mmd is None else check_number(batch_mmd, "batch_mmd")
        if self._batch_mmd and batch_key is None:
            raise ValueError(f"batch_mmd={batch_mmd} needs batch_key=...: the penalty pulls the batches' codes "
                             "together, so name the obs column holding the batches (or leave batch_mmd unset).")
        self.batch_mmd = self._batch_mmd  # resolved by fit
        self.conditioning: dict | None = None
        self.module: AutoencoderModule | None = None
        self.history = None
        self.var_names: pd.Index | None = None
        self.params: dict = {}
        #: codes (cells × n_latent) of up to REFERENCE_CODES training cells of a batch-aware model,
        #: saved with the weights; ``map_query`` pulls the query's codes onto them
        self.reference_codes: torch.Tensor | None = None

    def _first_layer_size(self, adata) -> int | None:
        if not isinstance(adata, AnnData):  # not known; bad input is refused after, with its message
            return None
        return int(adata.n_vars) * int(self.hidden[0] if self.hidden else self.n_latent)

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        use_highly_variable: bool | None = None,
        run: RunOptions | None = None,
        **run_options,
    ) -> Autoencoder:
        """Train on ``adata`` (``adata.X`` or ``layer``; in memory or backed).

        ``run`` (or its fields as keywords: ``progress``, ``callback``, ``cancel``, ``precision``,
        ``checkpoint_dir``, ``checkpoint_every``, ``resume``, ``chunk_size``, ``distributed``):
        see :class:`scnapse.train.RunOptions`. Under ``torchrun`` with several processes,
        training is distributed data parallel.
        """
        return self._fit(adata, run, run_options, layer=layer, use_highly_variable=use_highly_variable)

    _description = "autoencoder"

    def _prepare(self, adata: AnnData, *, device, layer=None, use_highly_variable=None) -> Prepared:
        check_adata(adata)
        X = get_matrix(adata, layer)
        self.conditioning = fit_conditioning(adata, self.batch_key, self.categorical_covariate_keys,
                                             self.continuous_covariate_keys)
        mask = gene_mask(adata, use_highly_variable)
        columns = None if mask is None else np.flatnonzero(mask)
        what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        summary = summarize(X, columns=columns)
        check_matrix_values(summary, what=what)
        check_informative(summary, what)
        if self.n_latent > summary.n_vars:
            raise ValueError(
                f"n_latent={self.n_latent} is larger than the number of genes ({summary.n_vars}): an embedding "
                f"cannot have more dimensions than the data. Choose n_latent <= {summary.n_vars}."
            )
        counts = looks_like_counts(summary)
        # the natural cost: a count likelihood for raw counts, mse for anything else
        cost = self.config.cost or ("nb" if counts else "mse")
        check_data_for_cost(cost, summary.min, summary.max, summary.all_integer, what=what)
        self.cost = cost
        self.variational = cost in COUNT_COSTS if self._variational is None else self._variational
        log_normalize = True if cost in COUNT_COSTS else (counts if self.log_normalize is None else self.log_normalize)
        scale = False if self.scale is None else bool(self.scale)
        self.var_names = adata.var_names[columns] if columns is not None else adata.var_names.copy()
        self.prep = Preprocessing(log_normalize=log_normalize, scale=scale)
        self.prep.fit(chunks_as_tensors(X, columns))
        self.prep.mean = None if self.prep.mean is None else self.prep.mean.to(device)
        self.prep.std = None if self.prep.std is None else self.prep.std.to(device)
        matrix = Matrix(X, device, columns=columns)
        library = torch.from_numpy(summary.row_sums.astype(np.float32)).to(device)
        params = {
            "n_latent": self.n_latent, "hidden": list(self.hidden), "variational": self.variational,
            "beta": self.beta, "log_normalize": log_normalize, "scale": scale, "pca_init": self.pca_init,
            "input_looked_like_counts": counts, "input_form": training_form(X),
            "preprocessing": self.prep.describe(), "layer": layer,
            "use_highly_variable": mask is not None, "n_vars": summary.n_vars, "n_obs": summary.n_obs,
            "cost": cost, "matrix": matrix.kind,
        }
        fields = {"x": matrix, "library": library}
        has_batches = self.conditioning is not None and self.conditioning["batch_key"] is not None
        self.batch_mmd = (DEFAULT_BATCH_MMD if has_batches else 0.0) if self._batch_mmd is None else self._batch_mmd
        params["batch_mmd"] = self.batch_mmd
        if self.conditioning is not None:
            info = self.conditioning
            fields["cond"] = conditioning(adata, info).to(device)
            params.update({"batch_key": info["batch_key"], "batches": list(info["batches"]),
                           "categorical_covariate_keys": list(info["categorical_covariate_keys"]),
                           "categorical_categories": dict(info["categorical_categories"]),
                           "continuous_covariate_keys": list(info["continuous_covariate_keys"])})
        return Prepared(fields, np.arange(summary.n_obs), summary.n_vars, params=params)

    def _build(self, data: Prepared, train_rows: np.ndarray, seed: int) -> AutoencoderModule:
        cfg = self.config
        module = AutoencoderModule(
            data.n_in, self.n_latent, self.hidden, activation=cfg.activation, dropout=cfg.dropout,
            batch_norm=cfg.batch_norm, cost=self.cost, variational=self.variational, linear_skip=self.pca_init,
            **self._cond_sizes(),
        ).to(data.fields["x"].device)
        pca_cells = 0
        if self.pca_init and module.n_batches:
            # PCA of the batch-centred data; the per-batch means start the batch paths
            codes = data.fields["cond"][:, : module.n_batches].argmax(1).cpu().numpy()
            mean, comps, pca_cells, gmeans = principal_components(
                data.fields["x"], train_rows, self.prep, self.n_latent, seed, groups=codes)
            module.init_pca(mean, comps, decoder=self.cost == "mse")
            module.init_batch_means(mean, comps, gmeans, decoder=self.cost == "mse")
        elif self.pca_init:
            mean, comps, pca_cells = principal_components(data.fields["x"], train_rows, self.prep, self.n_latent, seed)
            # the decoder's linear path reconstructs only where the output is the data (mse)
            module.init_pca(mean, comps, decoder=self.cost == "mse")
        data.params["pca_cells"] = pca_cells
        return module

    def _cond_sizes(self) -> dict:
        n_b, n_c = n_conditioning(self.conditioning)
        return {"n_batches": n_b, "n_covariates": n_c}

    def _loaders(self, data, train_rows, val_rows, gen, device, run):
        train, val, n = super()._loaders(data, train_rows, val_rows, gen, device, run)
        data.params["chunk_rows"] = train.chunk_rows
        return train, val, n

    def _default_max_epochs(self, n_samples: int, data: Prepared) -> int:
        return default_max_epochs(len(data.rows))

    def _after_fit(self, data: Prepared, train_rows, val_rows, val, gen) -> None:
        """A batch-aware model keeps the codes of a seeded sample of its training cells."""
        self.reference_codes = None
        if "cond" not in data.fields or not self.module.n_batches:
            return
        rng = np.random.default_rng([int(self.config.resolved_seed), 13])
        rows = np.asarray(train_rows)
        if len(rows) > REFERENCE_CODES:
            rows = np.sort(rng.choice(rows, size=REFERENCE_CODES, replace=False))
        matrix, cond = data.fields["x"], data.fields["cond"]
        self.module.eval()
        codes = []
        with torch.inference_mode():
            for start in range(0, len(rows), 1024):
                idx = torch.as_tensor(rows[start : start + 1024], dtype=torch.long, device=matrix.device)
                mu, _ = self.module.encode(self.prep(matrix.take(idx)), cond[idx.to(cond.device)])
                codes.append(mu.float().cpu())
        self.reference_codes = torch.cat(codes)
        data.params["reference_codes"] = int(len(rows))

    def _step(self, data: Prepared):
        prep, noise, variational, beta = self.prep, self.config.input_noise, self.variational, self.beta
        cost, mmd = self.cost, self.batch_mmd

        def step(module: AutoencoderModule, batch: dict, training: bool) -> torch.Tensor:
            x = batch["x"]
            inp = prep(x)
            target = inp if cost == "mse" else x
            if training and noise > 0:
                inp = inp + noise * torch.randn_like(inp)
            res = module(inp, batch.get("cond"))
            loss = reconstruction_loss(
                cost, res["out"], target, library=batch["library"], log_theta=getattr(module, "log_theta", None),
                nonzeros=batch.get("x_nonzeros"),
            )
            if variational:
                loss = loss + beta * gaussian_kl(res["mu"], res["logvar"]) / x.shape[1]
            if mmd and module.n_batches and batch.get("cond") is not None:
                codes = batch["cond"][:, : module.n_batches].argmax(1)
                loss = loss + mmd * batch_mmd(res["mu"], codes, module.n_batches)
            return loss

        return step

    # -- inference ------------------------------------------------------------------------------
    def transform(self, adata: AnnData, *, layer: str | None = None, batch_size: int = 2048) -> np.ndarray:
        """The embedding of every cell of ``adata`` (genes matched by name), shape (cells, n_latent)."""
        self._require_fitted()
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
        if adata.n_obs == 0:
            raise ValueError("adata has no cells to embed.")
        batch_size = check_count(batch_size, "batch_size")
        X = get_matrix(adata, layer)
        pos = gene_index(adata.var_names, self.var_names, what="autoencoder")
        self.query_input, undo_log, prep = self._query_reading(X)
        device = next(self.module.parameters()).device
        cond = None
        if self.conditioning is not None and self.conditioning["batch_key"] is not None:
            cond = conditioning(adata, self.conditioning).to(device)
        out = np.empty((adata.n_obs, self.n_latent), dtype=np.float32)
        self.module.eval()
        all_present = bool((pos >= 0).all())
        cuda = device.type == "cuda" and not undo_log and prep is self.prep
        with torch.inference_mode():
            if all_present and cuda and not is_backed(X):
                # GPU: the (sparse) matrix goes to the device once; batches are formed there
                rows = Matrix(X, device, columns=pos, pin_memory=True)
                chunks = ((s, rows.take(torch.arange(s, min(s + batch_size, adata.n_obs), device=device)))
                          for s in range(0, adata.n_obs, batch_size))
                for start, x in chunks:
                    if not torch.isfinite(x).all():
                        raise ValueError("The data to embed hold NaN or infinite values; remove or impute them first.")
                    mu, _ = self.module.encode(self.prep(x), None if cond is None else cond[start : start + x.shape[0]])
                    out[start : start + x.shape[0]] = mu.cpu().numpy()
            else:
                # CPU (or backed): row blocks are preprocessed while still sparse, genes matched by name
                identity = bool(np.array_equal(pos, np.arange(X.shape[1])))
                for start, block in iter_row_chunks(X, batch_size, None if identity or not all_present else pos):
                    if not all_present:
                        block = reindex_block(block, pos)
                    if undo_log:
                        block = expm1_block(block)
                    # sparse blocks stay sparse through the first layer on the CPU (4x less work)
                    x = prep.block(block, sparse_out=device.type == "cpu").to(device)
                    mu, _ = self.module.encode(x, None if cond is None else cond[start : start + x.shape[0]])
                    out[start : start + x.shape[0]] = mu.cpu().numpy()
        return out

    def _query_reading(self, X):
        """``(form, undo_log, prep)``: the query brought to the training data's form (see
        :func:`~scnapse.models._preprocess.query_reading`); refused where that is not certain."""
        trained = self.params.get("input_form")
        if trained is None:  # saved before the form was recorded
            trained = {"form": "counts" if self.params.get("input_looked_like_counts") else "other", "total": None}
        return query_reading(self.prep, trained, first_rows(X), what="autoencoder", strict=True)

    def fit_transform(self, adata: AnnData, **fit_kwargs) -> np.ndarray:
        layer = fit_kwargs.get("layer")
        return self.fit(adata, **fit_kwargs).transform(adata, layer=layer)

    # -- save / load ----------------------------------------------------------------------------
    def _get_state(self):
        self._require_fitted()
        config = {
            "architecture": {"n_in": len(self.var_names), "n_latent": self.n_latent, "hidden": self.hidden,
                             "activation": self.config.activation, "dropout": self.config.dropout,
                             "batch_norm": self.config.batch_norm, "cost": self.cost,
                             "variational": self.variational, "beta": self.beta,
                             "batch_mmd": self.batch_mmd, "linear_skip": self.pca_init, **self._cond_sizes(),
                             "batch_gain": getattr(self.module, "batch_gain", None) is not None},
            "conditioning": self.conditioning,
            "preprocessing": self.prep.to_config(),
            "train_config": self.config.to_dict(),
            "var_names": list(map(str, self.var_names)),
            "params": {k: v for k, v in self.params.items() if k != "environment"},
            "history": self.history.to_dict() if self.history else None,
        }
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors.update(self.prep.tensors())
        if self.reference_codes is not None:
            tensors["reference_codes"] = self.reference_codes
        return config, tensors

    def _set_state(self, config, tensors):
        from ..train.loop import History

        arch = config["architecture"]
        self.n_latent, self.hidden = arch["n_latent"], list(arch["hidden"])
        self.variational, self.beta, self.cost = arch["variational"], arch["beta"], arch["cost"]
        self._variational = self.variational
        self.batch_mmd = self._batch_mmd = float(arch.get("batch_mmd", 0.0))
        self.pca_init = bool(arch.get("linear_skip", False))
        tc = dict(config["train_config"])
        tc["augment"] = tuple(tc.get("augment") or ())
        self.config = TrainConfig(**tc)
        self.log_normalize = config["preprocessing"]["log_normalize"]
        self.scale = config["preprocessing"]["scale"]
        self.prep = Preprocessing.from_state(config["preprocessing"], tensors)
        self.var_names = pd.Index(config["var_names"])
        if len(self.var_names) != arch["n_in"]:
            raise ValueError(f"The saved autoencoder lists {len(self.var_names)} genes but its network reads "
                             f"{arch['n_in']}; save the model again with model.save(path).")
        self.params = config.get("params", {})
        self.conditioning = config.get("conditioning")
        info = self.conditioning or {}
        self.batch_key = info.get("batch_key")
        self.categorical_covariate_keys = list(info.get("categorical_covariate_keys", []))
        self.continuous_covariate_keys = list(info.get("continuous_covariate_keys", []))
        h = config.get("history")
        self.history = History(**h) if h else None
        self.module = AutoencoderModule(
            arch["n_in"], self.n_latent, self.hidden, activation=arch["activation"], dropout=arch["dropout"],
            batch_norm=arch["batch_norm"], cost=self.cost, variational=self.variational,
            linear_skip=self.pca_init, n_batches=arch.get("n_batches", 0), n_covariates=arch.get("n_covariates", 0),
            batch_gain=bool(arch.get("batch_gain", False)),
        )
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        self.module.load_state_dict(state)
        self.module.eval()
        # models saved before reference codes were kept load without them
        self.reference_codes = tensors.get("reference_codes")

    # -- query mapping --------------------------------------------------------------------------
    def map_query(self, query: AnnData, *, batch_key: str | None = None, layer: str | None = None,
                  max_epochs: int | None = None, lr: float = 0.1, batch_size: int = 256,
                  batch_mmd: float | None = None, init: str = "mean", rescale: bool = True,
                  seed: int = 0) -> Autoencoder:
        """A copy of this model that also knows ``query``'s new batches (scArches style).

        Only the new batches' own parameters (their columns in the encoder's and decoder's batch
        paths, and with ``rescale`` a scale of the encoder's first layer) are learnt, on the
        query's cells of new batches; every reference weight stays frozen, bit for bit. Besides the reconstruction, a penalty on the maximum mean discrepancy
        between each new batch's codes and the model's :attr:`reference_codes` (codes of training
        cells kept with the model) pulls the query onto the reference. Genes are matched by name
        as in :meth:`transform` (missing ones read as zero).

        Parameters
        ----------
        query
            Cells × genes in the form the reference was trained on (raw counts, or log data).
        batch_key
            ``query.obs`` column with the batches; default the reference's ``batch_key``.
        layer
            Use ``query.layers[layer]`` instead of ``query.X``.
        max_epochs
            Passes over the query's new cells; ``None``: enough for about 50 optimiser steps, at
            least 2 (:func:`map_query_epochs`).
        lr, batch_size, seed
            Training of the new parameters (Adam).
        batch_mmd
            Weight of the penalty pulling the query's codes onto the reference codes; ``None``:
            0.3 (0 for a model saved without reference codes). 0 maps on the reconstruction alone.
        init
            Start of the new batches' parameters: ``"mean"`` (the mean of the reference batches'
            parameters: the average batch) or ``"zeros"``.
        rescale
            The new batches also learn a scale for each unit of the encoder's first layer (a
            per-batch gain, 1 at the start and for every reference batch), besides its shift: a
            query sequenced at another depth reads differently on every unit, not only offset.

        How the defaults were chosen, with the measurements: docs/batches.md.

        Returns
        -------
        Autoencoder
            The mapped model (the reference is left unchanged; it keeps the reference codes);
            ``params["map_query"]`` records the new batches, the options, epochs, time and loss.
        """
        import copy
        import time

        self._require_fitted()
        info = self.conditioning
        if not info or info.get("batch_key") is None:
            raise ValueError("map_query needs a reference trained with batch_key=... (e.g. "
                             "sn.tl.autoencoder(reference, batch_key='batch')); this autoencoder has no batches.")
        if not isinstance(query, AnnData):
            raise TypeError(f"query must be an AnnData, not {type(query).__name__}.")
        if query.n_obs < 2:
            raise ValueError("query needs at least 2 cells to map.")
        batch_size = check_count(batch_size, "batch_size")
        if max_epochs is not None:
            max_epochs = check_count(max_epochs, "max_epochs")
        lr = check_number(lr, "lr")
        if lr <= 0:
            raise ValueError(f"lr={lr!r} must be a number > 0.")
        if init not in MAP_QUERY_INITS:
            raise ValueError(f"init={init!r}: choose 'mean' (the new batches start as the average reference "
                             "batch) or 'zeros'.")
        ref_codes = self.reference_codes
        if batch_mmd is None:
            batch_mmd = MAP_QUERY_BATCH_MMD if ref_codes is not None else 0.0
        else:
            batch_mmd = check_number(batch_mmd, "batch_mmd")
            if batch_mmd > 0 and ref_codes is None:
                raise ValueError(f"batch_mmd={batch_mmd} needs the reference codes this model was saved without "
                                 "(it was trained by an earlier scnapse). Set them from reference cells, e.g. "
                                 "model.reference_codes = torch.from_numpy(model.transform(reference[:1000])), "
                                 "or pass batch_mmd=0.")
        if batch_mmd > 0 and (ref_codes.ndim != 2 or ref_codes.shape[1] != self.n_latent or len(ref_codes) < 2):
            raise ValueError(f"model.reference_codes has shape {tuple(ref_codes.shape)}; it must hold the codes "
                             f"of at least 2 reference cells (cells × {self.n_latent}), e.g. "
                             "torch.from_numpy(model.transform(reference[:1000])).")
        key = info["batch_key"] if batch_key is None else batch_key
        col = _obs_column(query, key, "batch_key").astype(str)
        counts = col.value_counts()
        new = sorted(set(counts.index) - set(info["batches"]))
        single = [b for b in new if counts[b] < 2]
        if single:
            raise ValueError(f"Query batch(es) {single[:10]} hold a single cell; a new batch needs at least 2 cells.")
        rows = np.flatnonzero(col.isin(new).to_numpy())  # only the new batches' cells train
        epochs = (map_query_epochs(len(rows), batch_size) if max_epochs is None else max_epochs) if new else 0
        t0 = time.perf_counter()
        mapped = copy.deepcopy(self)
        qinfo = {**info, "batch_key": key, "batches": list(info["batches"]) + new}
        module = mapped.module
        device = next(module.parameters()).device
        for p in module.parameters():
            p.requires_grad_(False)
        losses, mmds = [], []
        if new:
            n_old = module.n_batches
            trainable = module.add_batches(len(new), init=init, gain=bool(rescale))
            module.to(device)
            sub = query[rows]
            x_raw, inp = mapped._query_matrix(sub, layer, device)
            cond = conditioning(sub, qinfo).to(device)
            groups = cond[:, n_old : n_old + len(new)].argmax(1)
            library = x_raw.sum(1)
            ref = None if not batch_mmd else ref_codes.to(device)
            gen = torch.Generator().manual_seed(int(seed))
            opt = torch.optim.Adam(trainable, lr=float(lr))
            module.eval()  # no dropout, batch-norm statistics of the reference
            cost, log_theta = mapped.cost, getattr(module, "log_theta", None)
            n = len(rows)
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen).to(device)
                total = total_mmd = 0.0
                for s in range(0, n, batch_size):
                    idx = order[s : s + batch_size]
                    res = module(inp[idx], cond[idx])
                    target = inp[idx] if cost == "mse" else x_raw[idx]
                    loss = reconstruction_loss(cost, res["out"], target, library=library[idx], log_theta=log_theta)
                    if mapped.variational:
                        loss = loss + mapped.beta * gaussian_kl(res["mu"], res["logvar"]) / inp.shape[1]
                    loss = loss.mean()
                    if ref is not None:  # a fresh sample of the reference codes, as many as the cells
                        pick = torch.randperm(len(ref), generator=gen)[: len(idx)].to(device)
                        penalty = reference_mmd(res["mu"], ref[pick], groups[idx])
                        loss = loss + batch_mmd * penalty
                        total_mmd += float(penalty.detach()) * len(idx)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / n)
                mmds.append(total_mmd / n)
        for p in module.parameters():
            p.requires_grad_(True)
        module.eval()
        mapped.conditioning = qinfo
        mapped.batch_key = key
        mapped.params = {**self.params, "batch_key": key, "batches": list(qinfo["batches"]),
                         "map_query": {"reference_batches": list(info["batches"]), "new_batches": new,
                                       "epochs": epochs, "max_epochs": max_epochs, "lr": float(lr),
                                       "batch_size": batch_size, "batch_mmd": float(batch_mmd), "init": init,
                                       "rescale": bool(rescale),
                                       "reference_codes": 0 if ref_codes is None else int(len(ref_codes)),
                                       "seed": int(seed), "n_query": int(query.n_obs), "n_trained": int(len(rows)),
                                       "seconds": time.perf_counter() - t0, "loss": losses,
                                       "reference_mmd": mmds if batch_mmd else []}}
        return mapped

    def _query_matrix(self, query: AnnData, layer, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw, encoder input)`` of the query on the model's genes (matched by name), dense."""
        X = get_matrix(query, layer)
        pos = gene_index(query.var_names, self.var_names, what="autoencoder")
        _, undo_log, prep = self._query_reading(X)
        raws, inps = [], []
        for _, block in iter_row_chunks(X, 4096, None):
            block = reindex_block(block, pos)
            if undo_log:
                block = expm1_block(block)
            raw = torch.as_tensor(block.toarray() if hasattr(block, "toarray") else np.asarray(block),
                                  dtype=torch.float32)
            raws.append(raw)
            inps.append(prep.block(block, sparse_out=False))
        raw, inp = torch.cat(raws).to(device), torch.cat(inps).to(device)
        if not torch.isfinite(inp).all():
            raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
        return raw, inp
