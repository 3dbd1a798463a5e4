"""``CellClassifier``: a multi-layer perceptron that labels cells, with calibrated confidence.

Trained on labelled reference cells with softmax cross-entropy by the one training loop
(:func:`scnapse.train.fit`), early-stopped on a stratified validation split, then calibrated on
that split by temperature scaling. It stores what it needs to label new cells correctly: the gene
names (matched by name), the classes, and the input transform.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse

from .._anndata import check_adata, gene_index, gene_mask, get_matrix
from .._settings import resolve_device
from ..nn.classifier import (
    ClassifierModule,
    cross_entropy,
    expected_calibration_error,
    fit_temperature,
)
from ..train import Loader, Matrix, RunOptions, TrainConfig
from ..train.config import COSTS
from ..train.data import iter_row_chunks, summarize
from ._base import BaseModel, Prepared, baseline_record, check_count, check_widths
from ._batches import apply_centring, batch_codes, batch_moments, centre_by_batch
from ._labels import (
    UNASSIGNED,
    as_categorical,
    balanced_weights,
    check_class_weight,
    encode_labels,
    labels_from_proba,
)
from ._metrics import classification_metrics
from ._preprocess import (
    Preprocessing,
    check_informative,
    chunks_as_tensors,
    expm1_block,
    first_rows,
    looks_like_counts,
    query_reading,
    select_columns,
    training_form,
    sparse_log_matmul,
)
from ._typicality import fit_typicality, typicality_distance, typicality_pvalue

ClassWeight = Literal["balanced", "sampling"] | None
__all__ = ["DEFAULT_HIDDEN", "UNASSIGNED", "CellClassifier", "classification_metrics", "labels_from_proba"]

#: widths of the classifier's hidden layers unless ``hidden=`` says otherwise
DEFAULT_HIDDEN = (256, 128)
#: the logistic regression of ``linear_init`` is fitted on at most this many training cells
LINEAR_MAX_CELLS = 20_000


def input_kind(summary, form: str, counts: bool) -> str:
    """What a training matrix holds, detected once: ``"counts"`` (raw or ``normalize_total``-ed:
    log-normalised inside the model), ``"log-normalised"``, or ``"features"`` (any other real
    values, e.g. negative ones or values past any log scale: standardised inside the model with
    the training mean and std)."""
    if summary.min < 0:
        return "features"
    if counts or form == "normalised":
        return "counts"
    if form != "log-normalised" and summary.max > 50:
        return "features"
    return "log-normalised"


def default_max_epochs(n_obs: int) -> int:
    """About 6,000 mini-batch steps of 32 cells on small data (early stopping usually ends
    training well before), fewer passes on large data: between 10 and 300."""
    return int(np.clip(round(200_000 / max(n_obs, 1)), 10, 300))


class CellClassifier(BaseModel):
    """A multi-layer perceptron cell-type classifier with calibrated confidence.

    Give it **raw counts** (log-normalised for the network as ``log1p(x / total × 10⁴)``),
    **log-normalised** data (``sc.pp.normalize_total`` + ``sc.pp.log1p``) or **any other
    real-valued features** (protein z-scores, qPCR ΔCt, arcsinh cytometry, image features; negative
    values allowed: standardised inside the model with the training mean and std). The kind is
    detected once and recorded (``input_kind``, ``params["input"]``); new cells are brought to the
    same form (counts and log-normalised data convert into each other), and their genes are
    matched by name. Only NaN and infinite values are refused.

    Parameters
    ----------
    hidden
        Widths of the hidden layers; ``()`` gives multinomial logistic regression.
    class_weight
        How class imbalance is handled: ``"balanced"`` (each class weighs as much in the cost,
        weights ∝ 1 / class size), ``"sampling"`` (mini-batches drawn with every class equally
        likely) or ``None``. ``class_balance=`` (``"weights"`` / ``"sampling"`` / ``"none"``) is
        the old name, still accepted.
    log_normalize
        Log-normalise the input. ``None``: when the training data look like raw counts.
    scale
        Standardise each gene (as ``sc.pp.scale``, clipped at ±10) before the network. ``False``
        (default) keeps sparse data sparse at prediction time, which is much faster.
    linear_init
        A linear path beside the network, fitted exactly first (multinomial logistic regression
        on the standardised input, L-BFGS to convergence), with the network's nonlinear part
        starting at zero: training starts at the logistic regression's solution and learns what
        it misses (default ``True``; the linear path is then kept fixed). When no epoch beats
        that start on the validation cells, early stopping keeps it (``history.best_epoch`` 0).
        After training (and the baseline, scored on the validation cells) the linear path is
        fitted again on every labelled cell (``params["linear_refit_cells"]``). ``False``: the
        plain MLP.
    lr_penalty
        Inverse L2 strength ``C`` of that logistic regression (scikit-learn's ``C``; default 1,
        scikit-learn's own default). Models saved before this option existed used ``1e-3``
        and keep it.
    batch_key
        Column of ``obs`` naming each cell's batch (sample, donor, study…). The model's input is
        then centred per batch: each batch on its own per-gene mean, so that labels learnt on
        some batches hold on others. At prediction the query is centred per query batch the same
        way (see :meth:`predict_scores`). ``None``: no batch correction.
    batch_scale
        With ``batch_key``, also divide each batch by its own per-gene standard deviation.
    **train_options
        Any :class:`~scnapse.train.TrainConfig` field: ``activation``, ``dropout``, ``input_noise``,
        ``l1``, ``l2``, ``batch_norm``, ``optimizer``, ``lr``, ``momentum``, ``weight_decay``,
        ``batch_size``, ``max_epochs``, ``early_stopping``, ``validation_fraction``, ``lr_schedule``,
        ``seed``, ``device``, ``deterministic``. ``cost`` can only be ``"cross_entropy"``.
        Defaults that differ from ``TrainConfig``'s are in :attr:`train_defaults`.

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
    dense = True  # one thread by default on small mini-batches (AUTO_THREAD_CAP)
    fit_hint = ".fit(adata, labels_key=...)"
    #: chosen on the PBMC benchmarks (see the documentation's classifier benchmark)
    train_defaults = {"cost": "cross_entropy", "dropout": 0.5, "l2": 0.0, "weight_decay": 0.0,
                      "early_stopping": 15, "validation_fraction": 0.15, "batch_size": 32}

    def __init__(
        self,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        *,
        class_weight: ClassWeight = "balanced",
        log_normalize: bool | None = None,
        scale: bool = False,
        class_balance: str | None = None,
        linear_init: bool = True,
        lr_penalty: float = 1.0,
        batch_key: str | None = None,
        batch_scale: bool = False,
        **train_options,
    ):
        cost = train_options.get("cost")
        if cost is not None and cost != "cross_entropy":
            what = "is not a cost" if cost not in COSTS else "is a reconstruction cost for autoencoders"
            raise ValueError(
                f"cost={cost!r} {what}; a classifier is trained with softmax cross-entropy: "
                "cost='cross_entropy' (or leave cost out)."
            )
        self.config = self._config_from(None, train_options)
        hidden = check_widths(hidden)
        self.class_weight = check_class_weight(class_weight, class_balance)
        if log_normalize not in (None, True, False) or scale not in (True, False):
            raise ValueError("log_normalize must be None, True or False, and scale True or False.")
        if linear_init not in (True, False):
            raise ValueError(f"linear_init={linear_init!r} must be True or False.")
        if isinstance(lr_penalty, bool) or not isinstance(lr_penalty, (int, float)) or not lr_penalty > 0:
            raise ValueError(f"lr_penalty={lr_penalty!r} must be a positive number (scikit-learn's C).")
        if batch_key is not None and not isinstance(batch_key, str):
            raise TypeError(f"batch_key={batch_key!r} must be the name of an adata.obs column (a string) or None.")
        if batch_scale not in (True, False):
            raise ValueError(f"batch_scale={batch_scale!r} must be True or False.")
        self.linear_init = bool(linear_init)
        self.lr_penalty = float(lr_penalty)
        self.batch_key = batch_key
        self.batch_scale = bool(batch_scale)
        self.batch_categories: list[str] = []
        self.hidden = hidden
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
        label are left out with a warning). ``adata`` is not modified. ``run`` (or its fields as
        keywords): see :class:`scnapse.train.RunOptions`. With the model's ``batch_key``, every
        cell of a batch (labelled or not) counts towards that batch's centring."""
        try:
            return self._fit(adata, run, run_options, labels_key=labels_key, layer=layer,
                             use_highly_variable=use_highly_variable)
        finally:
            # training ran on the batch-centred input with an identity preprocessing; the model
            # keeps the real one, applied to new cells before their own batch centring
            real = getattr(self, "_real_prep", None)
            if real is not None:
                self.prep, self._real_prep = real, None

    _description = "classifier"

    def _prepare(self, adata: AnnData, *, device, labels_key, layer=None, use_highly_variable=None) -> Prepared:
        check_adata(adata, what="the reference")
        labels = encode_labels(adata.obs, labels_key, stacklevel=5)
        X = get_matrix(adata, layer)
        mask = gene_mask(adata, use_highly_variable)
        columns = None if mask is None else np.flatnonzero(mask)
        what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        summary = summarize(X, columns=columns)
        counts = self._check_input(summary, what)
        check_informative(summary, what)
        form = training_form(X)
        kind = input_kind(summary, form["form"], counts)
        if kind == "features" and self.log_normalize:
            raise ValueError(
                f"log_normalize=True, but {what} has negative values (min {summary.min:g}): a log of "
                "counts cannot be taken. Leave log_normalize unset (features are standardised inside "
                "the model), or give the raw counts (e.g. layer='counts')."
            )
        log_normalize = (kind == "counts") if self.log_normalize is None else bool(self.log_normalize)
        if kind != "features" and self.log_normalize is not None:
            kind = "counts" if log_normalize else "log-normalised"
        scale = self.scale or kind == "features"
        if kind == "log-normalised" and summary.max > 50:
            warnings.warn(
                f"{what} reaches {summary.max:g} and is not log-transformed by the model: give raw counts "
                "or log1p-normalised data (sc.pp.normalize_total + sc.pp.log1p).",
                UserWarning,
                stacklevel=5,
            )
        self.var_names = adata.var_names[columns] if columns is not None else adata.var_names.copy()
        self.classes = labels.classes
        self.input_kind = kind
        self.prep = Preprocessing(log_normalize=log_normalize, scale=scale)
        self.prep.fit(chunks_as_tensors(X, columns))
        if self.prep.scale:
            self.prep.mean, self.prep.std = self.prep.mean.to(device), self.prep.std.to(device)
        batch_params = {}
        if self.batch_key is not None:
            codes, self.batch_categories = batch_codes(adata.obs, self.batch_key, what="the reference")
            centred = centre_by_batch(chunks_as_tensors(X, columns), self.prep, codes, len(self.batch_categories),
                                      self.batch_scale)
            self._real_prep = self.prep
            self.prep = Preprocessing(log_normalize=False, scale=False)  # the input below is already prepared
            matrix = Matrix(centred.numpy(), device)
            batch_params = {"batch_key": self.batch_key, "batch_scale": self.batch_scale,
                            "batch_categories": list(self.batch_categories),
                            "batch_sizes": {c: int(n) for c, n in
                                            zip(self.batch_categories, np.bincount(codes, minlength=len(self.batch_categories)))}}
        else:
            self.batch_categories = []
            matrix = Matrix(X, device, columns=columns)
        k = len(labels.classes)
        params = {
            "labels_key": labels_key, "hidden": list(self.hidden), "class_weight": self.class_weight,
            "log_normalize": log_normalize, "scale": scale, "input": self.input_kind,
            "linear_init": self.linear_init, "lr_penalty": self.lr_penalty,
            "input_looked_like_counts": counts, "input_form": form,
            "preprocessing": (self._real_prep if self.batch_key is not None else self.prep).describe(),
            "batch_key": self.batch_key, **batch_params,
            "layer": layer, "use_highly_variable": mask is not None, "n_vars": summary.n_vars,
            "n_obs": int(adata.n_obs), "n_labelled": int(len(labels.labelled)),
            "n_unlabelled": int(adata.n_obs - len(labels.labelled)), "classes": list(labels.classes),
            "class_counts": {c: int(n) for c, n in zip(labels.classes, labels.counts)}, "matrix": matrix.kind,
        }
        fields = {"x": matrix, "y": torch.as_tensor(labels.codes, device=device)}
        return Prepared(fields, labels.labelled, summary.n_vars, labels=labels, params=params,
                        extra={"n_classes": k})

    @staticmethod
    def _check_input(summary, what: str) -> bool:
        """Refuse what a classifier cannot read (NaN, inf); ``True`` when the data look like raw counts."""
        if summary.n_nonfinite:
            raise ValueError(
                f"{what} holds {summary.n_nonfinite} NaN or infinite value(s). Remove or impute them first "
                "(e.g. adata.X = np.nan_to_num(adata.X)), or pick another layer=."
            )
        return looks_like_counts(summary)

    def _build(self, data: Prepared, train_rows, seed: int) -> ClassifierModule:
        cfg = self.config
        module = ClassifierModule(data.n_in, len(self.classes), self.hidden, activation=cfg.activation,
                                  dropout=cfg.dropout, batch_norm=cfg.batch_norm, linear=self.linear_init)
        self._linear_fit = None
        if self.linear_init:
            self._linear_fit = self._fit_logistic(data, train_rows, seed)
            module.init_linear(*self._linear_fit)
        return module

    def _inputs(self, matrix, rows: np.ndarray, chunk: int = 4096):
        """The model's input (after its preprocessing) for ``rows``, block by block."""
        for s in range(0, len(rows), chunk):
            idx = torch.as_tensor(rows[s : s + chunk], device=matrix.device)
            yield self._model_input(matrix, idx)

    def _model_input(self, matrix, idx: torch.Tensor) -> torch.Tensor:
        return self.prep(matrix.take(idx))

    def _fit_logistic(self, data: Prepared, train_rows, seed: int,
                      class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Multinomial logistic regression on the standardised input of (at most
        ``LINEAR_MAX_CELLS``) training cells, fitted to convergence by L-BFGS in float64 with the
        same class weights as the network's cost (or ``class_weight``); returned folded into
        ``(weight, bias)`` that act on the network's input directly (the standardisation is part
        of the linear map)."""
        from sklearn.linear_model import LogisticRegression

        rows = self._linear_rows(train_rows, seed)
        x = torch.cat(list(self._inputs(data.fields["x"], rows))).double().cpu().numpy()
        y = data.labels.codes[rows]
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-8] = 1.0
        z = (x - mean) / std
        class_weight = data.class_weight if class_weight is None else class_weight
        weight = None if class_weight is None else class_weight.cpu().double().numpy()[y]
        lr = LogisticRegression(C=self.lr_penalty, max_iter=2000, tol=1e-8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ConvergenceWarning after 2000 steps: the fit is still used
            lr.fit(z, y, sample_weight=weight)
        k = len(self.classes)
        coef, intercept = np.zeros((k, z.shape[1])), np.zeros(k)
        present = lr.classes_.astype(int)
        if coef[present].shape[0] == 2 and lr.coef_.shape[0] == 1:  # binary: one logit, split in two
            coef[present] = np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
            intercept[present] = [-lr.intercept_[0] / 2, lr.intercept_[0] / 2]
        else:
            coef[present], intercept[present] = lr.coef_, lr.intercept_
        missing = np.setdiff1d(np.arange(k), present)
        intercept[missing] = -30.0  # a class with no training cell here is never predicted
        w = coef / std
        b = intercept - w @ mean
        return torch.from_numpy(w).float(), torch.from_numpy(b).float()

    @staticmethod
    def _linear_rows(rows, seed: int) -> np.ndarray:
        """The cells a logistic regression is fitted on: ``rows``, at most ``LINEAR_MAX_CELLS``
        of them (drawn with ``seed``)."""
        rows = np.sort(np.asarray(rows))
        if len(rows) > LINEAR_MAX_CELLS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, LINEAR_MAX_CELLS, replace=False))
        return rows

    def _refit_linear(self, data: Prepared, train_rows, val_rows) -> None:
        """The linear path fitted again on every labelled cell, validation cells included (with
        class weights from all of them), once early stopping, calibration and the baseline have
        used the validation cells; the MLP beside it is kept as trained."""
        linear = self.module.linear
        if linear is None or not len(val_rows):
            return
        seed = self.config.resolved_seed
        weight = (balanced_weights(data.labels.codes[data.rows], len(self.classes), data.class_weight.device)
                  if data.class_weight is not None else None)
        w, b = self._fit_logistic(data, data.rows, seed, class_weight=weight)
        with torch.no_grad():
            linear.weight.copy_(w.to(linear.weight))
            linear.bias.copy_(b.to(linear.bias))
        data.params["linear_refit_cells"] = int(len(self._linear_rows(data.rows, seed)))

    def _baseline(self, data: Prepared, train_rows, val_rows) -> dict | None:
        """Logistic regression (the linear path's start, or fitted now) on the same held-out cells."""
        if not len(val_rows) or "macro_f1" not in self.metrics:
            return None
        fit = self._linear_fit or self._fit_logistic(data, train_rows, self.config.resolved_seed)
        w, b = (t.to(data.fields["x"].device) for t in fit)
        rows = np.sort(np.asarray(val_rows))
        pred = torch.cat([x @ w.T + b for x in self._inputs(data.fields["x"], rows)]).argmax(1).cpu().numpy()
        score = classification_metrics(data.labels.codes[rows], pred, self.classes)["macro_f1"]
        return baseline_record(method="logistic regression", metric="macro-F1", network=self.metrics["macro_f1"],
                               baseline=score, n=len(rows))

    def _default_max_epochs(self, n_samples: int, data: Prepared) -> int:
        return default_max_epochs(len(data.rows))

    def _after_fit(self, data: Prepared, train_rows, val_rows, val, gen) -> None:
        self._calibrate(val, len(self.classes))
        fit_typicality(self, data.fields["x"], train_rows, val_rows, data.labels.codes, gen)

    def _summary(self) -> str:
        m = self.metrics
        return (f"; validation accuracy {m.get('accuracy', float('nan')):.3f}, "
                f"macro-F1 {m.get('macro_f1', float('nan')):.3f}")

    def _step(self, data: Prepared):
        prep, noise, weight = self.prep, self.config.input_noise, data.class_weight

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

    def _distance(self, projected: torch.Tensor) -> torch.Tensor:
        return typicality_distance(self, projected)

    def _typicality(self, distance: torch.Tensor) -> np.ndarray:
        return typicality_pvalue(self, distance)

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

    def _query_batches(self, adata: AnnData, batch_key: str | None) -> np.ndarray | None:
        """The query's batch codes for the per-batch centring (``None``: a model without batches)."""
        if self.batch_key is None:
            self.query_batches = None
            if batch_key is not None:
                warnings.warn(
                    f"batch_key={batch_key!r} is ignored: this classifier was trained without batch_key, so its "
                    "input is not centred per batch. Train with batch_key= to transfer labels across batches.",
                    UserWarning, stacklevel=4,
                )
            return None
        key = batch_key if batch_key is not None else (self.batch_key if self.batch_key in adata.obs.columns else None)
        if key is None:
            if adata.n_obs < 2:
                raise ValueError(
                    "This classifier centres its input per batch, and the query has a single cell: give at "
                    "least 2 cells of the same batch (or batch_key= naming a column that groups them)."
                )
            codes, names = np.zeros(adata.n_obs, dtype=np.int64), ["(whole query)"]
        else:
            codes, names = batch_codes(adata.obs, key, what="the query")
        self.query_batches = {"batch_key": key, "batches": names}
        return codes

    def iter_scores(self, adata: AnnData, *, layer: str | None = None, batch_size: int = 4096,
                    batch_key: str | None = None):
        """``(start, logits, distance)`` for consecutive blocks of cells (genes matched by name);
        ``distance`` is the squared Mahalanobis distance behind :meth:`predict_scores`' typicality.

        Sparse data stay sparse: the first layer (and the projection for the distance, computed
        with it in one product) is a sparse × dense product; only one block is ever dense. A model
        trained with ``batch_key`` reads the query twice (once for each query batch's mean) and
        densely; ``batch_key`` here names the query's batch column (see :meth:`predict_scores`)."""
        batch_size = check_count(batch_size, "batch_size")
        X, pos = self._query_matrix(adata, layer)
        codes = self._query_batches(adata, batch_key)
        module = self.module
        device = next(module.parameters()).device
        present = pos >= 0
        identity = X.shape[1] == len(pos) and bool(present.all()) and np.array_equal(pos, np.arange(len(pos)))
        cols_present, pos_present = np.flatnonzero(present), pos[present]
        first = module.body[0] if len(module.body) else module.head
        rest = list(module.body)[1:] + ([module.head] if len(module.body) else [])
        n_hidden = first.weight.shape[0]
        linear = module.linear
        n_linear = 0 if linear is None else linear.weight.shape[0]
        projection = self.typ_projection.to(device)
        # one (genes × (hidden + linear path + components)) matrix: the first layer, the linear
        # path and the projection together
        parts = [first.weight.detach().t()] + ([] if linear is None else [linear.weight.detach().t()])
        fused = torch.cat([*parts, projection], dim=1).contiguous()
        if self.input_kind == "features":
            # any real-valued features: standardised with the training statistics, as they come
            self.query_input, undo_log, prep = "features", False, self.prep
        else:
            self.query_input, undo_log, prep = query_reading(self.prep, self.params.get("input_form"),
                                                             first_rows(X), what="classifier", strict=False)

        def blocks():
            for start, block in iter_row_chunks(X, batch_size):
                if not identity:
                    block = select_columns(block, pos_present, cols_present, len(pos))
                if undo_log:
                    block = expm1_block(block)
                yield start, block

        def dense(block):
            dense = block.toarray() if sparse.issparse(block) else np.asarray(block)
            x = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)).to(device)
            if not torch.isfinite(x).all():
                raise ValueError("The query holds NaN or infinite values; remove or impute them first.")
            return prep(x)

        if codes is not None:
            n_batches = int(codes.max()) + 1
            mean, std = batch_moments(((start, dense(block)) for start, block in blocks()), codes, n_batches)
        module.eval()
        with torch.inference_mode():
            for start, block in blocks():
                if codes is not None:
                    x = apply_centring(dense(block), codes[start : start + block.shape[0]], mean, std,
                                       self.batch_scale)
                    both = x @ fused
                elif sparse.issparse(block) and not prep.scale:
                    both = sparse_log_matmul(block, prep, fused, device)
                else:
                    both = dense(block) @ fused
                h = both[:, :n_hidden]
                h = h + first.bias if first.bias is not None else h
                for layer_ in rest:
                    h = layer_(h)
                if linear is not None:
                    h = h + both[:, n_hidden : n_hidden + n_linear] + linear.bias
                yield start, h, self._distance(both[:, n_hidden + n_linear :].contiguous())

    def predict_scores(self, adata: AnnData, *, layer: str | None = None,
                       batch_size: int = 4096, batch_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, typicality)``.

        ``probabilities``: calibrated, cells × classes (columns in :attr:`classes` order).
        ``typicality``: per cell, the fraction of held-out reference cells that are at least as
        far from the nearest class (Mahalanobis distance in a PCA of the input): an empirical
        p-value, near 0 for cells unlike any class the model was trained on.

        A model trained with ``batch_key`` centres the query per query batch (each on its own
        per-gene mean, as each training batch was): ``batch_key`` names the query's column of
        batches; ``None``: the model's ``batch_key`` if the query has that column, else the whole
        query is one batch. A model trained without ``batch_key`` ignores it (with a warning)."""
        self._require_fitted()
        proba = np.empty((adata.n_obs, len(self.classes)), dtype=np.float32)
        typical = np.empty(adata.n_obs, dtype=np.float32)
        t = float(self.module.temperature)
        for start, logits, dist in self.iter_scores(adata, layer=layer, batch_size=batch_size, batch_key=batch_key):
            stop = start + logits.shape[0]
            proba[start:stop] = torch.softmax(logits / t, dim=1).cpu().numpy()
            typical[start:stop] = self._typicality(dist)
        return proba, typical

    def predict_proba(self, adata: AnnData, *, layer: str | None = None, batch_size: int = 4096,
                      batch_key: str | None = None) -> np.ndarray:
        """Calibrated class probabilities, cells × classes (columns in :attr:`classes` order);
        ``batch_key``: see :meth:`predict_scores`."""
        return self.predict_scores(adata, layer=layer, batch_size=batch_size, batch_key=batch_key)[0]

    def predict(self, adata: AnnData, *, layer: str | None = None, min_confidence: float = 0.0,
                min_typicality: float = 0.0, batch_size: int = 4096, batch_key: str | None = None) -> pd.Categorical:
        """The most probable class of each cell (a ``pandas.Categorical`` over :attr:`classes`).
        Cells whose calibrated probability is below ``min_confidence``, or whose typicality is
        below ``min_typicality``, get ``"Unassigned"`` (both 0 by default: every cell gets a class);
        ``batch_key``: see :meth:`predict_scores`."""
        proba, typical = self.predict_scores(adata, layer=layer, batch_size=batch_size, batch_key=batch_key)
        return as_categorical(labels_from_proba(proba, self.classes, min_confidence, typical, min_typicality)[0],
                              self.classes)

    def to(self, device: str) -> CellClassifier:
        super().to(device)
        dev = resolve_device(device)
        if self.prep.scale:
            self.prep.mean, self.prep.std = self.prep.mean.to(dev), self.prep.std.to(dev)
        return self

    def __repr__(self) -> str:
        if self.module is None:
            return f"CellClassifier(hidden={self.hidden}, untrained)"
        batches = "" if self.batch_key is None else f", centred per {self.batch_key!r}"
        return (f"CellClassifier({len(self.var_names)} genes → {self.hidden} → {len(self.classes)} classes, "
                f"input: {self.input_kind}{batches}, temperature {float(self.module.temperature):.3g})")

    # -- save / load ----------------------------------------------------------------------------
    def _get_state(self):
        self._require_fitted()
        config = {
            "architecture": {"n_in": len(self.var_names), "n_classes": len(self.classes), "hidden": self.hidden,
                             "activation": self.config.activation, "dropout": self.config.dropout,
                             "batch_norm": self.config.batch_norm, "linear_init": self.linear_init,
                             "lr_penalty": self.lr_penalty},
            "baseline": self.baseline,
            "classes": list(self.classes),
            "input_kind": self.input_kind,
            "batch": {"batch_key": self.batch_key, "batch_scale": self.batch_scale,
                      "categories": list(self.batch_categories)},
            "class_weight": self.class_weight,
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
            self.linear_init = bool(arch.get("linear_init", False))
            self.lr_penalty = float(arch.get("lr_penalty", 1e-3))
            self.baseline = config.get("baseline")
            tc = dict(config["train_config"])
            tc["augment"] = tuple(tc.get("augment") or ())
            self.config = TrainConfig(**tc)
            self.classes = list(config["classes"])
            self.input_kind = config["input_kind"]
            batch = config.get("batch") or {}
            self.batch_key = batch.get("batch_key")
            self.batch_scale = bool(batch.get("batch_scale", False))
            self.batch_categories = list(batch.get("categories") or [])
            old = {"weights": "balanced", "sampling": "sampling", "none": None}
            self.class_weight = config.get("class_weight", old.get(config.get("class_balance"), "balanced"))
            self.prep = Preprocessing.from_state(config["preprocessing"], tensors)
            self.log_normalize = self.prep.log_normalize
            self.scale = self.prep.scale
            self.var_names = pd.Index(config["var_names"])
            self.metrics = config.get("metrics") or {}
            self.params = config.get("params") or {}
            h = config.get("history")
            self.history = History(**h) if h else None
            if len(self.classes) != arch["n_classes"] or len(self.var_names) != arch["n_in"]:
                raise ValueError(
                    f"its config lists {len(self.classes)} classes and {len(self.var_names)} genes, but the "
                    f"network has {arch['n_classes']} outputs and {arch['n_in']} inputs"
                )
            self.module = ClassifierModule(
                arch["n_in"], arch["n_classes"], self.hidden, activation=arch["activation"],
                dropout=arch["dropout"], batch_norm=arch["batch_norm"], linear=self.linear_init,
            )
            state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
            self.module.load_state_dict(state)
            self.typ_projection = tensors["typicality.projection"]
            self.typ_offset = tensors["typicality.offset"]
            self.typ_means = tensors["typicality.means"]
            self.typ_reference = tensors["typicality.reference"]
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"This saved CellClassifier is incomplete or was written by an incompatible scnapse "
                f"({config.get('scnapse_version')}): {err}"
            ) from None
        self.module.eval()


#: older names: the classifier's training defaults, and the old class-balance vocabulary
CLASSIFIER_DEFAULTS = CellClassifier.train_defaults
CLASS_BALANCES = ("weights", "sampling", "none")
