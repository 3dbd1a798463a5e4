"""``CellClassifier``: a multi-layer perceptron that labels cells, with calibrated confidence.

Trained on labelled reference cells with softmax cross-entropy by the one training loop
(:func:`scnapse.train.fit`), early-stopped on a stratified validation split, then calibrated on
that split by temperature scaling. It stores what it needs to label new cells correctly: the gene
names (matched by name), the classes, and the input transform.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse

from .._anndata import check_adata, gene_index, gene_mask, get_matrix
from .._settings import logger, resolve_device
from ..nn.classifier import ClassifierModule, cross_entropy, expected_calibration_error, fit_temperature
from ..train import Loader, Matrix, RunOptions, TrainConfig, environment, fit, seed_everything, split_indices
from ..train.config import COSTS
from ..train.data import iter_row_chunks, summarize
from ._base import BaseModel
from ._preprocess import Preprocessing, chunks_as_tensors, looks_like_counts

UNASSIGNED = "Unassigned"
ClassBalance = Literal["weights", "sampling", "none"]
CLASS_BALANCES = ("weights", "sampling", "none")

#: the classifier's own defaults for TrainConfig fields (chosen on the PBMC benchmarks; see README)
CLASSIFIER_DEFAULTS = {
    "cost": "cross_entropy",
    "dropout": 0.5,
    "l2": 0.0,
    "weight_decay": 0.0,
    "early_stopping": 15,
    "validation_fraction": 0.15,
    "batch_size": 32,
}


def default_max_epochs(n_obs: int) -> int:
    """About 6,000 mini-batch steps of 32 cells on small data (early stopping usually ends
    training well before), fewer passes on large data: between 10 and 300."""
    return int(np.clip(round(200_000 / max(n_obs, 1)), 10, 300))


def _check_labels(adata: AnnData, labels_key) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(codes, classes, labelled)``: class code per cell (-1 = unlabelled), class names, and
    the row numbers of the labelled cells. Raises on anything a classifier cannot learn from."""
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key must be the name of an adata.obs column (a str), not {labels_key!r}.")
    if labels_key not in adata.obs.columns:
        raise KeyError(
            f"labels_key={labels_key!r} is not a column of adata.obs; available columns: "
            f"{list(adata.obs.columns)}."
        )
    col = adata.obs[labels_key]
    if not isinstance(col.dtype, pd.CategoricalDtype) and (
        pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
    ):
        raise ValueError(
            f"adata.obs[{labels_key!r}] holds numbers ({col.dtype}), not class labels. If they are "
            f"cluster ids, make them labels first: adata.obs[{labels_key!r}] = "
            f"adata.obs[{labels_key!r}].astype(str).astype('category')."
        )
    missing = col.isna().to_numpy()
    if missing.all():
        raise ValueError(f"adata.obs[{labels_key!r}] has no label at all (every value is missing).")
    if missing.any():
        warnings.warn(
            f"{int(missing.sum())} of {len(col)} cells have no label (NaN) in adata.obs[{labels_key!r}]; "
            "they are left out of training.",
            UserWarning,
            stacklevel=3,
        )
    values = col.astype(object)[~missing].astype(str).to_numpy()
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = set(values)
        classes = [str(c) for c in col.cat.categories if str(c) in present]
    else:
        classes = sorted(set(values))
    if len(classes) < 2:
        raise ValueError(
            f"adata.obs[{labels_key!r}] has {len(classes)} class ({classes}); a classifier needs at least 2."
        )
    if UNASSIGNED in classes:
        raise ValueError(
            f"adata.obs[{labels_key!r}] has a class named {UNASSIGNED!r}, the name scnapse gives to "
            "low-confidence cells; remove those cells or rename the class."
        )
    index = {c: i for i, c in enumerate(classes)}
    labelled = np.flatnonzero(~missing)
    codes = np.full(adata.n_obs, -1, dtype=np.int64)
    codes[labelled] = [index[v] for v in values]
    counts = np.bincount(codes[labelled], minlength=len(classes))
    lonely = [c for c, n in zip(classes, counts) if n < 2]
    if lonely:
        raise ValueError(
            f"class(es) {lonely} of adata.obs[{labels_key!r}] have a single cell; a classifier needs at "
            "least 2 cells per class (one to learn from, one to validate on). Remove them, e.g. "
            f"ref = ref[~ref.obs[{labels_key!r}].isin({lonely})].copy(), or merge them into a related class."
        )
    return codes, classes, labelled


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1 (over the classes present in ``y_true``), per-class F1 and the
    confusion matrix (rows = true class, columns = predicted; in ``classes`` order)."""
    from sklearn.metrics import confusion_matrix, f1_score

    k = len(classes)
    present = np.unique(y_true)
    per_class = f1_score(y_true, y_pred, labels=np.arange(k), average=None, zero_division=0)
    return {
        "n_cells": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean(per_class[present])) if len(y_true) else float("nan"),
        "per_class_f1": {c: (float(per_class[i]) if i in present else None) for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=np.arange(k)).tolist(),
    }


class _BalancedLoader(Loader):
    """Each pass draws as many cells as there are, every class equally likely (with replacement)."""

    def __init__(self, fields, indices, batch_size, *, class_of: np.ndarray, generator, device):
        super().__init__(fields, indices, batch_size, shuffle=True, generator=generator, drop_single=True,
                         device=device)
        counts = np.bincount(class_of)
        self.prob = torch.as_tensor(1.0 / counts[class_of], dtype=torch.float64)

    def __iter__(self):
        draw = torch.multinomial(self.prob, len(self.indices), replacement=True, generator=self.generator)
        order = self.indices[draw]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) == 1 and len(order) > 1:
                continue
            yield self.batch(torch.sort(idx).values)


class CellClassifier(BaseModel):
    """A multi-layer perceptron cell-type classifier with calibrated confidence.

    Give it **raw counts** (log-normalised for the network as ``log1p(x / total × 10⁴)``) or
    **log-normalised** data (``sc.pp.normalize_total`` + ``sc.pp.log1p``), not scaled data. It
    records which it was trained on; new cells may be given either way (counts are detected and
    log-normalised the same way), and their genes are matched by name.

    Parameters
    ----------
    hidden
        Widths of the hidden layers; ``()`` gives multinomial logistic regression.
    class_balance
        How class imbalance is handled: ``"weights"`` (each class weighs as much in the cost,
        weights ∝ 1 / class size), ``"sampling"`` (mini-batches drawn with every class equally
        likely) or ``"none"``.
    log_normalize
        Log-normalise the input. ``None``: when the training data look like raw counts.
    scale
        Standardise each gene (as ``sc.pp.scale``, clipped at ±10) before the network. ``False``
        (default) keeps sparse data sparse at prediction time, which is much faster.
    **train_options
        Any :class:`~scnapse.train.TrainConfig` field: ``activation``, ``dropout``, ``input_noise``,
        ``l1``, ``l2``, ``batch_norm``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``,
        ``batch_size``, ``max_epochs``, ``early_stopping``, ``validation_fraction``, ``lr_schedule``,
        ``seed``, ``device``, ``deterministic``. ``cost`` can only be ``"cross_entropy"``.
        Defaults that differ from ``TrainConfig``'s are in :data:`CLASSIFIER_DEFAULTS`.

    Attributes
    ----------
    classes
        The class names, in the order of the probability columns.
    var_names
        The genes the model reads, in its input order.
    metrics
        Held-out (validation) accuracy, macro-F1, per-class F1, confusion matrix, and the expected
        calibration error before and after temperature scaling.
    """

    kind = "CellClassifier"
    fit_hint = ".fit(adata, labels_key=...)"

    def __init__(
        self,
        hidden: Sequence[int] = (256, 128),
        *,
        class_balance: ClassBalance = "weights",
        log_normalize: bool | None = None,
        scale: bool = False,
        **train_options,
    ):
        cost = train_options.get("cost")
        if cost is not None and cost != "cross_entropy":
            what = "is not a cost" if cost not in COSTS else "is a reconstruction cost for autoencoders"
            raise ValueError(
                f"cost={cost!r} {what}; a classifier is trained with softmax cross-entropy: "
                "cost='cross_entropy' (or leave cost out)."
            )
        self.config = TrainConfig.from_kwargs(CLASSIFIER_DEFAULTS, **train_options)
        hidden = [int(h) for h in (hidden or ())]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden={hidden!r}: layer widths must be positive integers.")
        if class_balance not in CLASS_BALANCES:
            raise ValueError(f"class_balance={class_balance!r} is not valid; choose one of {list(CLASS_BALANCES)}.")
        if log_normalize not in (None, True, False) or scale not in (True, False):
            raise ValueError("log_normalize must be None, True or False, and scale True or False.")
        self.hidden = hidden
        self.class_balance = class_balance
        self.log_normalize = log_normalize
        self.scale = bool(scale)
        self.module: ClassifierModule | None = None
        self.history = None
        self.var_names: pd.Index | None = None
        self.classes: list[str] = []
        self.metrics: dict = {}
        self.params: dict = {}
        self.input_kind: str | None = None

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        adata: AnnData,
        *,
        labels_key: str,
        layer: str | None = None,
        use_highly_variable: bool | None = None,
        run: RunOptions | None = None,
        **run_options,
    ) -> CellClassifier:
        """Train on the labelled cells of ``adata`` (``obs[labels_key]``; cells with a missing
        label are left out with a warning). ``adata`` is not modified."""
        run = RunOptions.resolve(run, run_options)
        check_adata(adata, what="the reference")
        codes, classes, labelled = _check_labels(adata, labels_key)
        X = get_matrix(adata, layer)
        mask = gene_mask(adata, use_highly_variable)
        columns = None if mask is None else np.flatnonzero(mask)
        what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        summary = summarize(X, columns=columns)
        if summary.n_nonfinite:
            raise ValueError(
                f"{what} holds {summary.n_nonfinite} NaN or infinite value(s). Remove or impute them first "
                "(e.g. adata.X = np.nan_to_num(adata.X)), or pick another layer=."
            )
        if summary.min < 0:
            raise ValueError(
                f"{what} has negative values (min {summary.min:g}): it looks scaled. Train on raw counts or "
                "log-normalised data (e.g. layer='counts', or keep a copy before sc.pp.scale), so that new "
                "cells can be brought to the same form."
            )
        counts = looks_like_counts(summary)
        log_normalize = counts if self.log_normalize is None else bool(self.log_normalize)
        if not log_normalize and summary.max > 50:
            warnings.warn(
                f"{what} reaches {summary.max:g} and is not log-transformed by the model: give raw counts "
                "or log1p-normalised data (sc.pp.normalize_total + sc.pp.log1p).",
                UserWarning,
                stacklevel=2,
            )

        cfg = self.config
        seed = cfg.resolved_seed
        device = resolve_device(cfg.device)
        gen = seed_everything(seed, deterministic=cfg.deterministic)
        k = len(classes)
        train_pos, val_pos = split_indices(len(labelled), cfg.validation_fraction, gen, stratify=codes[labelled])
        train_idx, val_idx = labelled[train_pos], labelled[val_pos]
        if len(train_idx) < 2:
            raise ValueError(f"Training needs at least 2 labelled cells; {len(train_idx)} are left for training.")

        self.var_names = adata.var_names[columns] if columns is not None else adata.var_names.copy()
        self.classes = classes
        self.input_kind = "counts" if log_normalize else "log-normalised"
        self.prep = Preprocessing(log_normalize=log_normalize, scale=self.scale)
        self.prep.fit(chunks_as_tensors(X, columns))
        if self.prep.scale:
            self.prep.mean, self.prep.std = self.prep.mean.to(device), self.prep.std.to(device)

        train_counts = np.bincount(codes[train_idx], minlength=k)
        if self.class_balance == "weights":
            w = len(train_idx) / (k * np.maximum(train_counts, 1))
            weight = torch.as_tensor(w, dtype=torch.float32, device=device)
        else:
            weight = None

        self.module = ClassifierModule(
            summary.n_vars, k, self.hidden, activation=cfg.activation, dropout=cfg.dropout,
            batch_norm=cfg.batch_norm,
        ).to(device)
        matrix = Matrix(X, device, columns=columns)
        fields = {"x": matrix, "y": torch.as_tensor(codes, device=device)}
        if self.class_balance == "sampling":
            train = _BalancedLoader(fields, train_idx, cfg.batch_size, class_of=codes[train_idx],
                                    generator=gen, device=device)
        else:
            train = Loader(fields, train_idx, cfg.batch_size, shuffle=True, generator=gen,
                           drop_single=True, device=device)
        val = Loader(fields, val_idx, max(cfg.batch_size, 1024), device=device) if len(val_idx) else None
        max_epochs = cfg.max_epochs or default_max_epochs(len(labelled))

        self.history = fit(
            self.module, self._step(weight), train, val, cfg, max_epochs=max_epochs, **run.fit_kwargs(), description="classifier",
        )
        self._calibrate(val, k)
        self._fit_typicality(matrix, train_idx, val_idx, codes, gen)
        self.params = {
            "labels_key": labels_key, "hidden": list(self.hidden), "class_balance": self.class_balance,
            "log_normalize": log_normalize, "scale": self.scale, "input": self.input_kind,
            "input_looked_like_counts": counts, "preprocessing": self.prep.describe(),
            "layer": layer, "use_highly_variable": mask is not None, "n_vars": summary.n_vars,
            "n_obs": int(adata.n_obs), "n_labelled": int(len(labelled)),
            "n_unlabelled": int(adata.n_obs - len(labelled)), "classes": list(classes),
            "class_counts": {c: int(n) for c, n in zip(classes, np.bincount(codes[labelled], minlength=k))},
            **cfg.to_dict(), "seed": seed, "max_epochs": max_epochs, "device": str(device),
            "n_train": int(len(train_idx)), "n_validation": int(len(val_idx)), "matrix": matrix.kind,
            "environment": environment(device),
        }
        m = self.metrics
        logger.info(
            f"classifier: {self.history.epoch[-1] if self.history.epoch else 0} epochs ({self.history.stopped}), "
            f"best epoch {self.history.best_epoch}, on {device}; validation accuracy "
            f"{m.get('accuracy', float('nan')):.3f}, macro-F1 {m.get('macro_f1', float('nan')):.3f}"
        )
        return self

    def _step(self, weight: torch.Tensor | None):
        prep, noise = self.prep, self.config.input_noise

        def step(module: ClassifierModule, batch: dict, training: bool) -> torch.Tensor:
            x = prep(batch["x"])
            if training and noise > 0:
                x = x + noise * torch.randn_like(x)
            return cross_entropy(module(x), batch["y"], weight)

        return step

    def _calibrate(self, val: Loader | None, k: int) -> None:
        """Temperature scaling on the validation cells, and the held-out metrics."""
        module = self.module
        module.eval()
        if val is None:
            module.temperature.fill_(1.0)
            self.metrics = {"note": "validation_fraction=0: no held-out cells, no calibration"}
            return
        logits, y = [], []
        with torch.inference_mode():
            for batch in val:
                logits.append(module(self.prep(batch["x"])).cpu())
                y.append(batch["y"].cpu())
        logits, y = torch.cat(logits).float(), torch.cat(y)
        before = expected_calibration_error(torch.softmax(logits, 1), y)
        t = fit_temperature(logits, y)
        module.temperature.fill_(t)
        after = expected_calibration_error(torch.softmax(logits / t, 1), y)
        pred = logits.argmax(1).numpy()
        self.metrics = {
            **classification_metrics(y.numpy(), pred, self.classes),
            "temperature": t, "ece_before": before, "ece_after": after,
        }

    def _fit_typicality(self, matrix: Matrix, train_idx, val_idx, codes, gen, n_components: int = 30) -> None:
        """How typical a cell is of the reference: Mahalanobis distance to the nearest class mean in
        a PCA of the model's input (within-class covariance), turned into an empirical p-value
        against the validation cells. Softmax confidence alone stays high for cell types the model
        never saw; this distance does not."""
        device = matrix.device
        k = len(self.classes)

        def inputs(rows, chunk=4096):
            for s in range(0, len(rows), chunk):
                idx = torch.as_tensor(np.sort(rows[s : s + chunk]), device=device)
                yield idx, self.prep(matrix.take(idx)).double()

        sample = train_idx
        if len(sample) > 5000:
            sample = np.sort(sample[torch.randperm(len(sample), generator=gen)[:5000].numpy()])
        y = torch.cat([b for _, b in inputs(sample)])
        center = y.mean(0)
        d = int(max(1, min(n_components, y.shape[0] - 1, y.shape[1])))
        torch.manual_seed(self.config.resolved_seed)  # svd_lowrank draws a random projection
        _, _, v = torch.svd_lowrank(y - center, q=d, niter=4)
        del y
        labels = torch.as_tensor(codes, device=device)
        total = torch.zeros(k, d, dtype=torch.float64, device=device)
        n = torch.zeros(k, dtype=torch.float64, device=device)
        for idx, b in inputs(train_idx):
            z = (b - center) @ v
            total.index_add_(0, labels[idx], z)
            n.index_add_(0, labels[idx], torch.ones(len(idx), dtype=torch.float64, device=device))
        means = total / n.clamp_min(1).unsqueeze(1)
        cov = torch.zeros(d, d, dtype=torch.float64, device=device)
        for idx, b in inputs(train_idx):
            r = (b - center) @ v - means[labels[idx]]
            cov += r.T @ r
        cov /= max(len(train_idx) - k, 1)
        cov += (1e-3 * torch.trace(cov) / d + 1e-8) * torch.eye(d, dtype=torch.float64, device=device)
        # whiten: P = L Lᵀ, so (z − μ)ᵀ P (z − μ) = ‖(z − μ) L‖²
        chol = torch.linalg.cholesky(torch.linalg.inv(cov))
        self.typ_projection = (v @ chol).float()
        self.typ_offset = (center @ v @ chol).float()
        self.typ_means = (means @ chol).float()
        ref_rows = val_idx if len(val_idx) else train_idx
        dist = torch.cat([self._distance(b.float() @ self.typ_projection) for _, b in inputs(ref_rows)])
        self.typ_reference = torch.sort(dist).values.cpu()
        self.metrics["typicality_reference"] = "validation cells" if len(val_idx) else "training cells"

    def _distance(self, projected: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance to the nearest class mean, from ``input @ typ_projection``."""
        w = projected - self.typ_offset.to(projected.device)
        means = self.typ_means.to(w.device)
        # ‖w − μ‖² = ‖w‖² − 2 w·μ + ‖μ‖² (one small matrix product; cdist is slower here)
        d2 = (w * w).sum(1, keepdim=True) - 2 * w @ means.T + (means * means).sum(1)
        return d2.min(dim=1).values.clamp_min(0)

    def _typicality(self, distance: torch.Tensor) -> np.ndarray:
        """Fraction of reference (validation) cells at least as far from a class, ``(1 + #) / (1 + n)``.

        Beyond the farthest reference cell this fraction stops falling at ``1 / (1 + n)``; there a
        scaled χ² fitted to the reference distances (by their mean and variance) continues it."""
        from scipy.stats import chi2

        ref = self.typ_reference.double()
        d = distance.detach().cpu().double().contiguous()
        farther = len(ref) - torch.searchsorted(ref, d, right=False)
        p = ((1 + farther).double() / (1 + len(ref))).numpy()
        beyond = (d > ref[-1]).numpy() if len(ref) else np.ones(len(d), dtype=bool)
        if beyond.any() and len(ref) > 2:
            mean, var = float(ref.mean()), float(ref.var())
            scale, dof = var / (2 * mean), 2 * mean**2 / var
            p[beyond] = np.minimum(p[beyond], chi2.sf(d.numpy()[beyond] / scale, dof))
        return p.astype(np.float32)

    # -- inference ------------------------------------------------------------------------------
    def _query_matrix(self, adata: AnnData, layer: str | None):
        self._require_fitted()
        if not isinstance(adata, AnnData):
            raise TypeError(f"adata must be an AnnData, not {type(adata).__name__}.")
        if adata.n_obs == 0:
            raise ValueError("The query has no cells (0 observations); nothing to annotate.")
        X = get_matrix(adata, layer)
        pos = gene_index(adata.var_names, self.var_names, what="classifier")
        return X, pos

    def _is_counts(self, block) -> bool:
        """Does a block of query rows hold raw counts (then they are log-normalised)?"""
        vals = block.data if sparse.issparse(block) else np.asarray(block).ravel()
        if vals.size == 0:
            return self.input_kind == "counts"
        if not np.all(np.isfinite(vals)):
            raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
        if vals.min() < 0:
            raise ValueError(
                "The query has negative values: it looks scaled. Give raw counts or log-normalised data "
                "(e.g. layer='counts'), as the model was trained on."
            )
        integer = bool(np.all(vals == np.round(vals)))
        return integer and (vals.max() > 30 or self.input_kind == "counts")

    def iter_scores(self, adata: AnnData, *, layer: str | None = None, batch_size: int = 4096):
        """``(start, logits, distance)`` for consecutive blocks of cells (genes matched by name);
        ``distance`` is the squared Mahalanobis distance behind :meth:`predict_scores`' typicality.

        Sparse data stay sparse: the first layer (and the projection for the distance, computed
        with it in one product) is a sparse × dense product; only one block is ever dense."""
        X, pos = self._query_matrix(adata, layer)
        module = self.module
        device = next(module.parameters()).device
        present = pos >= 0
        identity = X.shape[1] == len(pos) and bool(present.all()) and np.array_equal(pos, np.arange(len(pos)))
        cols_present, pos_present = np.flatnonzero(present), pos[present]
        first = module.body[0] if len(module.body) else module.head
        rest = list(module.body)[1:] + ([module.head] if len(module.body) else [])
        n_hidden = first.weight.shape[0]
        projection = self.typ_projection.to(device)
        # one (genes × (hidden + components)) matrix: the first layer and the projection together
        fused = torch.cat([first.weight.detach().t(), projection], dim=1).contiguous()
        prep = None
        module.eval()
        with torch.inference_mode():
            for start, block in iter_row_chunks(X, batch_size):
                if not identity:
                    block = _select_columns(block, pos_present, cols_present, len(pos))
                if prep is None:
                    self.query_input = "counts" if self._is_counts(block) else "log-normalised"
                    prep = dataclasses.replace(self.prep, log_normalize=self.query_input == "counts")
                if sparse.issparse(block) and not prep.scale:
                    both = _sparse_log_matmul(block, prep, fused, device)
                else:
                    dense = block.toarray() if sparse.issparse(block) else np.asarray(block)
                    x = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)).to(device)
                    if not torch.isfinite(x).all():
                        raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
                    both = prep(x) @ fused
                h = both[:, :n_hidden]
                h = h + first.bias if first.bias is not None else h
                for layer_ in rest:
                    h = layer_(h)
                yield start, h, self._distance(both[:, n_hidden:].contiguous())

    def predict_scores(self, adata: AnnData, *, layer: str | None = None,
                       batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, typicality)``.

        ``probabilities``: calibrated, cells × classes (columns in :attr:`classes` order).
        ``typicality``: per cell, the fraction of held-out reference cells that are at least as
        far from the nearest class (Mahalanobis distance in a PCA of the input): an empirical
        p-value, near 0 for cells unlike any class the model was trained on."""
        self._require_fitted()
        proba = np.empty((adata.n_obs, len(self.classes)), dtype=np.float32)
        typical = np.empty(adata.n_obs, dtype=np.float32)
        t = float(self.module.temperature)
        for start, logits, dist in self.iter_scores(adata, layer=layer, batch_size=batch_size):
            stop = start + logits.shape[0]
            proba[start:stop] = torch.softmax(logits / t, dim=1).cpu().numpy()
            typical[start:stop] = self._typicality(dist)
        return proba, typical

    def predict_proba(self, adata: AnnData, *, layer: str | None = None, batch_size: int = 4096) -> np.ndarray:
        """Calibrated class probabilities, cells × classes (columns in :attr:`classes` order)."""
        return self.predict_scores(adata, layer=layer, batch_size=batch_size)[0]

    def predict(self, adata: AnnData, *, layer: str | None = None, min_confidence: float = 0.0,
                min_typicality: float = 0.0, batch_size: int = 4096) -> np.ndarray:
        """The most probable class of each cell (an array of names). Cells whose calibrated
        probability is below ``min_confidence``, or whose typicality is below ``min_typicality``,
        get ``"Unassigned"`` (both 0 by default: every cell gets a class)."""
        proba, typical = self.predict_scores(adata, layer=layer, batch_size=batch_size)
        return labels_from_proba(proba, self.classes, min_confidence, typical, min_typicality)[0]

    def to(self, device: str) -> CellClassifier:
        super().to(device)
        dev = resolve_device(device)
        if self.prep.scale:
            self.prep.mean, self.prep.std = self.prep.mean.to(dev), self.prep.std.to(dev)
        return self

    def __repr__(self) -> str:
        if self.module is None:
            return f"CellClassifier(hidden={self.hidden}, untrained)"
        return (f"CellClassifier({len(self.var_names)} genes → {self.hidden} → {len(self.classes)} classes, "
                f"input: {self.input_kind}, temperature {float(self.module.temperature):.3g})")

    # -- save / load ----------------------------------------------------------------------------
    def _get_state(self):
        self._require_fitted()
        config = {
            "architecture": {"n_in": len(self.var_names), "n_classes": len(self.classes), "hidden": self.hidden,
                             "activation": self.config.activation, "dropout": self.config.dropout,
                             "batch_norm": self.config.batch_norm},
            "classes": list(self.classes),
            "input_kind": self.input_kind,
            "class_balance": self.class_balance,
            "preprocessing": self.prep.to_config(),
            "train_config": self.config.to_dict(),
            "var_names": list(map(str, self.var_names)),
            "metrics": self.metrics,
            "params": {k: v for k, v in self.params.items() if k != "environment"},
            "history": self.history.to_dict() if self.history else None,
        }
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors.update(self.prep.tensors())
        tensors.update({"typicality.projection": self.typ_projection, "typicality.offset": self.typ_offset,
                        "typicality.means": self.typ_means, "typicality.reference": self.typ_reference})
        return config, tensors

    def _set_state(self, config, tensors):
        from ..train.loop import History

        try:
            arch = config["architecture"]
            self.hidden = list(arch["hidden"])
            tc = dict(config["train_config"])
            tc["augment"] = tuple(tc.get("augment") or ())
            self.config = TrainConfig(**tc)
            self.classes = list(config["classes"])
            self.input_kind = config["input_kind"]
            self.class_balance = config.get("class_balance", "weights")
            self.prep = Preprocessing.from_state(config["preprocessing"], tensors)
            self.log_normalize = self.prep.log_normalize
            self.scale = self.prep.scale
            self.var_names = pd.Index(config["var_names"])
            self.metrics = config.get("metrics") or {}
            self.params = config.get("params") or {}
            h = config.get("history")
            self.history = History(**h) if h else None
            self.module = ClassifierModule(
                arch["n_in"], arch["n_classes"], self.hidden, activation=arch["activation"],
                dropout=arch["dropout"], batch_norm=arch["batch_norm"],
            )
            state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
            self.module.load_state_dict(state)
            self.typ_projection = tensors["typicality.projection"]
            self.typ_offset = tensors["typicality.offset"]
            self.typ_means = tensors["typicality.means"]
            self.typ_reference = tensors["typicality.reference"]
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(
                f"This saved CellClassifier is incomplete or was written by an incompatible scnapse "
                f"({config.get('scnapse_version')}): {err}"
            ) from None
        self.module.eval()


def _select_columns(block, pos_present: np.ndarray, cols_present: np.ndarray, n_model: int):
    """The model's genes of a row block (model order; zeros for missing genes), staying sparse."""
    if sparse.issparse(block):
        sub = sparse.csr_matrix(block[:, pos_present])
        sub.sort_indices()
        out = sparse.csr_matrix((sub.data, cols_present[sub.indices], sub.indptr), shape=(block.shape[0], n_model))
        out.sort_indices()
        return out
    out = np.zeros((block.shape[0], n_model), dtype=np.float32)
    out[:, cols_present] = np.asarray(block)[:, pos_present]
    return out


def _sparse_log_matmul(block, prep: Preprocessing, weight: torch.Tensor, device) -> torch.Tensor:
    """``prep(block) @ weight`` for a CSR block and an unscaled transform, without densifying."""
    csr = sparse.csr_matrix(block, dtype=np.float32)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    data = csr.data
    if not np.all(np.isfinite(data)):
        raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
    if prep.log_normalize:
        lib = np.maximum(np.asarray(csr.sum(axis=1), dtype=np.float32).ravel(), np.float32(1e-8))
        data = np.log1p(data / np.repeat(lib, np.diff(csr.indptr)) * np.float32(prep.target_sum))
    idx_type = np.int32 if csr.nnz < 2**31 - 1 else np.int64
    with warnings.catch_warnings():  # torch: "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        x = torch.sparse_csr_tensor(
            # int32 indices: no copy for scipy's usual CSR, and MKL's sparse product is faster
            torch.from_numpy(csr.indptr.astype(idx_type, copy=False)),
            torch.from_numpy(csr.indices.astype(idx_type, copy=False)),
            torch.from_numpy(np.asarray(data, dtype=np.float32)), size=csr.shape,
        ).to(device)
    return x @ weight


def labels_from_proba(proba: np.ndarray, classes: Sequence[str], min_confidence: float = 0.0,
                      typicality: np.ndarray | None = None, min_typicality: float = 0.0):
    """``(labels, confidence)``: the top class of each row of ``proba`` and its probability;
    ``"Unassigned"`` where the probability is below ``min_confidence`` or the typicality below
    ``min_typicality``."""
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(top)), top]
    names = np.asarray(list(classes), dtype=object)[top]
    low = confidence < min_confidence
    if typicality is not None:
        low |= typicality < min_typicality
    names[low] = UNASSIGNED
    return names, confidence
