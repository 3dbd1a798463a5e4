"""``SequenceModel``: GRU/LSTM networks on per-cell traces and time-course sequences.

One class, three tasks: ``"classify"`` (cross-entropy on a label per sequence), ``"embed"``
(sequence autoencoder, masked mse; the code is the embedding) and ``"forecast"`` (the next
``horizon`` steps, mse). Sequences come from a sequence AnnData (:mod:`scnapse.ts`). Features are
standardised with means / standard deviations over the real steps of the training sequences,
recorded in the model and applied unchanged later.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from ..nn.rnn import (
    ForecasterModule,
    SequenceAutoencoderModule,
    SequenceClassifierModule,
    ar_forecast,
    check_cell,
    persistence_forecast,
    step_mask,
    summary_features,
)
from ..train import Loader, RunOptions, TrainConfig
from ..ts._sequences import Sequences, get_sequences, is_irregular, time_steps
from ._base import BaseModel, Prepared, baseline_record, check_count, check_widths
from ._labels import (
    BalancedLoader,
    as_categorical,
    check_class_weight,
    encode_labels,
    labels_from_proba,
)

Task = Literal["classify", "embed", "forecast"]
TASKS = ("classify", "embed", "forecast")
TASK_COST = {"classify": "cross_entropy", "embed": "mse", "forecast": "mse"}
TIME_FEATURE = "_dt"
#: one recurrent layer of 64 units unless ``hidden=`` says otherwise
DEFAULT_HIDDEN = (64,)
#: ridge penalty of the closed-form linear paths (on standardised features)
RIDGE_ALPHA = 1.0


def fit_ridge(X: np.ndarray, Y: np.ndarray, alpha: float = RIDGE_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression in closed form with an unpenalised intercept (as
    ``sklearn.linear_model.Ridge(alpha)``): ``(weight (outputs, inputs), bias (outputs,))``."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)  # (inputs, outputs)
    return W.T, my - mx @ W


def default_max_epochs(n_samples: int, batch_size: int) -> int:
    """Passes over the data for about 3,000 optimizer steps, between 20 and 300 epochs (early
    stopping usually ends sooner). Small data sets get more passes: a few hundred sequences make
    only a handful of mini-batches per epoch."""
    steps_per_epoch = max(1, -(-n_samples // max(batch_size, 1)))
    return int(np.clip(round(3_000 / steps_per_epoch), 20, 300))


def _recurrent_widths(hidden, n_layers) -> list[int]:
    """``hidden`` as widths; the old ``hidden=int, n_layers=int`` form with a warning."""
    if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
        warnings.warn(f"hidden={hidden} as one number is deprecated; give the widths of the layers, e.g. "
                      f"hidden={(int(hidden),) * int(n_layers or 1)}.", FutureWarning, stacklevel=4)
        if n_layers is not None and (isinstance(n_layers, bool) or int(n_layers) < 1):
            raise ValueError(f"n_layers={n_layers!r} must be an integer >= 1.")
        hidden = (int(hidden),) * int(n_layers or 1)
    elif n_layers is not None and int(n_layers) != len(list(hidden)):
        raise ValueError(f"n_layers={n_layers} disagrees with hidden={hidden!r} (one width per layer); "
                         "leave n_layers out.")
    widths = check_widths(hidden, allow_empty=False)
    if len(set(widths)) > 1:
        raise ValueError(f"hidden={hidden!r}: the stacked recurrent layers share one width here, e.g. "
                         f"{(widths[0],) * len(widths)}.")
    return widths


class SequenceModel(BaseModel):
    """A recurrent network on sequences: classify, embed or forecast.

    Parameters
    ----------
    task
        ``"classify"``, ``"embed"`` or ``"forecast"``.
    cell
        ``"gru"`` or ``"lstm"``.
    hidden
        Widths of the stacked recurrent layers, one number per layer (``dropout`` applies
        between them and before the head); the layers share one width, e.g. ``(64,)`` or
        ``(64, 64)``. An int (with ``n_layers``, the old form) is still accepted.
    bidirectional
        Read sequences both ways (classify / embed). A forecaster is always unidirectional: it
        must not read the future. ``None``: True for classify and embed.
    n_latent
        Size of the embedding (embed).
    horizon
        Steps to forecast (forecast).
    teacher_forcing
        Forecast training only: probability that a decoder step reads the true previous value
        rather than its own prediction. Always off at evaluation and prediction.
    use_time
        Add the time since the previous step as an input feature. ``None``: when the sequences
        have a time per step (``obsm[key + "_time"]``) and it is uneven (gaps, irregular sampling).
    class_weight
        ``"balanced"`` weighs each class inversely to its frequency in the cross-entropy; ``None``: equal.
    linear_init
        Start from the classical solution and learn what it misses (classify / forecast). A
        classifier gets a logistic-regression path on standardised summary features of each
        sequence (per feature mean, std, min, max, first, last, slope; and the length), fitted
        first; a forecaster gets a linear autoregressive path (ridge on the last ``ar_order`` steps, fitted
        in closed form on the training windows) and its recurrent part starts at zero. The
        start is the training loop's epoch 0: if no epoch beats it on the validation samples (or
        training ends worse than it there), the start is kept (``params["kept_linear_start"]``).
        A forecaster's AR path is then fitted again on all the training sequences, validation
        ones included (``params["ar_refit_sequences"]``), after the baseline was scored.
    ar_order
        Steps of history the linear autoregressive path reads (forecast).
    **train_options
        :class:`~scnapse.train.TrainConfig` fields (lr, batch_size, max_epochs, early_stopping,
        dropout, l2, optimizer, seed, device, …). The cost is fixed by the task.
    """

    kind = "SequenceModel"
    workload = "recurrent"  # one thread by default: faster for recurrent nets (AUTO_THREAD_CAP)

    def __init__(
        self,
        task: Task = "classify",
        *,
        cell: str = "gru",
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        n_layers: int | None = None,
        bidirectional: bool | None = None,
        n_latent: int = 8,
        horizon: int = 3,
        teacher_forcing: float = 0.5,
        use_time: bool | None = None,
        class_weight: str | None = None,
        linear_init: bool = True,
        ar_order: int = 8,
        **train_options,
    ):
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not valid; choose one of {list(TASKS)}.")
        self.config = self._config_from(None, train_options)
        if self.config.cost is not None and self.config.cost != TASK_COST[task]:
            raise ValueError(f"cost={self.config.cost!r} does not fit task={task!r}; its cost is "
                             f"{TASK_COST[task]!r} (leave cost unset).")
        self.config = self.config.replace(cost=TASK_COST[task])
        check_cell(cell)
        widths = _recurrent_widths(hidden, n_layers)
        n_latent, horizon = check_count(n_latent, "n_latent"), check_count(horizon, "horizon")
        if not 0 <= float(teacher_forcing) <= 1:
            raise ValueError(f"teacher_forcing={teacher_forcing!r} must be between 0 and 1.")
        class_weight = check_class_weight(class_weight)
        if task == "forecast" and bidirectional:
            raise ValueError("A forecaster cannot be bidirectional: it would read the future it must predict.")
        self.task = task
        self.cell = cell
        self.hidden = widths
        self.bidirectional = (task != "forecast") if bidirectional is None else bool(bidirectional)
        self.n_latent, self.horizon = int(n_latent), int(horizon)
        self.teacher_forcing = float(teacher_forcing)
        self.use_time = use_time
        self.class_weight = class_weight
        self.linear_init = bool(linear_init)
        self.ar_order = check_count(ar_order, "ar_order")
        self.module = None
        self.history = None
        self.params: dict = {}
        self.classes: list[str] | None = None
        self.labels_key: str | None = None

    # -- inputs ---------------------------------------------------------------------------------
    def _inputs(self, seqs: Sequences, features: list[str]) -> np.ndarray:
        """(n, T, F[+1]) raw inputs in the model's feature order, the time step appended if used."""
        pos = pd.Index(seqs.features).get_indexer(features)
        if (pos < 0).any():
            missing = [f for f, p in zip(features, pos) if p < 0]
            raise ValueError(
                f"The sequences lack the feature(s) {missing} this model was trained on (it expects "
                f"{features}; these have {seqs.features}). Build them with the same features=[...]."
            )
        x = seqs.x[:, :, pos]
        if self.use_time_:
            if seqs.time is None:
                raise ValueError("This model reads the time between steps, but the sequences have no "
                                 "obsm['<key>_time']; build them with scnapse.ts.from_tracks / from_timecourse.")
            dt = time_steps(seqs.time, seqs.lengths).astype(np.float32)
            x = np.concatenate([x, dt[:, :, None]], axis=2)
        return x

    def _standardise(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return y * step_mask(lengths, x.shape[1])[:, :, None]

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        adata: AnnData,
        *,
        labels_key: str | None = None,
        sequence_key: str = "sequence",
        length_key: str = "length",
        run: RunOptions | None = None,
        **run_options,
    ) -> SequenceModel:
        """Train on the sequences of ``adata`` (``obsm[sequence_key]``, ``obs[length_key]``).
        ``run`` (or its fields as keywords): see :class:`scnapse.train.RunOptions`."""
        return self._fit(adata, run, run_options, labels_key=labels_key, sequence_key=sequence_key,
                         length_key=length_key)

    _unit = "sequences"

    @property
    def _description(self) -> str:
        return f"rnn-{self.task}"

    def _prepare(self, adata: AnnData, *, device, labels_key=None, sequence_key="sequence",
                 length_key="length") -> Prepared:
        seqs = get_sequences(adata, key=sequence_key, length_key=length_key)
        self.features = list(seqs.features)
        self.n_features = len(self.features)
        self.use_time_ = bool(is_irregular(seqs.time, seqs.lengths)) if self.use_time is None else bool(self.use_time)
        self.sequence_key, self.length_key = sequence_key, length_key
        rows, labels = np.arange(seqs.n), None
        if self.task == "classify":
            labels = encode_labels(adata.obs, labels_key, what="sequences", warn_missing=False)
            self.classes, self.labels_key, rows = labels.classes, labels_key, labels.labelled
        elif self.task == "forecast":
            rows = self._forecastable(seqs)
        raw = self._inputs(seqs, self.features)
        # standardisation from the real steps of the sequences used for training
        real = step_mask(torch.from_numpy(seqs.lengths[rows]), raw.shape[1]).numpy()
        vals = raw[rows][real].astype(np.float64)
        mean, std = vals.mean(axis=0), vals.std(axis=0)
        std[std < 1e-8] = 1.0
        self.mean, self.std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        lengths = torch.from_numpy(seqs.lengths).to(device)
        base = self._standardise(torch.from_numpy(raw).to(device), lengths)
        params = {
            "task": self.task, "cell": self.cell, "hidden": list(self.hidden), "n_layers": len(self.hidden),
            "bidirectional": self.bidirectional, "n_latent": self.n_latent if self.task == "embed" else None,
            "horizon": self.horizon if self.task == "forecast" else None,
            "teacher_forcing": self.teacher_forcing if self.task == "forecast" else None,
            "use_time": self.use_time_, "class_weight": self.class_weight, "labels_key": labels_key,
            "classes": self.classes, "features": self.features, "sequence_key": sequence_key,
            "length_key": length_key, "n_sequences": int(len(rows)), "padded_length": int(raw.shape[1]),
            "linear_init": self.linear_init if self.task != "embed" else None,
            "ar_order": self.ar_order if self.task == "forecast" else None,
        }
        return Prepared({}, rows, raw.shape[2], labels=labels, params=params, val_batch=512,
                        extra={"base": base, "lengths": lengths, "lengths_np": seqs.lengths})

    def _build(self, data: Prepared, train_rows, seed: int):
        if self.task == "forecast":
            data.extra["ar"] = self._fit_ar(data, train_rows)
        if self.task == "classify":
            data.extra["summary"] = self._summaries(data)
        module = self._make_module(data.n_in)
        if self.task == "forecast" and self.linear_init:
            module.set_ar(*data.extra["ar"])
        if self.task == "classify" and self.linear_init:
            module.set_linear(*self._fit_logistic(data, train_rows))
        return module

    # -- the logistic-regression path and the baseline of a sequence classifier ---------------
    def _summaries(self, data: Prepared) -> np.ndarray:
        base, lengths = data.extra["base"], data.extra["lengths"]
        out = []
        with torch.no_grad():
            for start in range(0, base.shape[0], 1024):
                L = lengths[start : start + 1024]
                out.append(summary_features(base[start : start + 1024, : int(L.max())], L).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _fit_logistic(self, data: Prepared, train_rows):
        """Logistic regression (sklearn, C=1) on the standardised summary features of the
        training sequences, as (mean, std, weight (classes, features), bias (classes,))."""
        from sklearn.linear_model import LogisticRegression

        S, y = data.extra["summary"][train_rows], data.labels.codes[train_rows]
        mean, std = S.mean(axis=0), S.std(axis=0)
        std[std < 1e-8] = 1.0
        k = len(self.classes)
        W, b = np.zeros((k, S.shape[1])), np.zeros(k)
        present = np.unique(y)
        if len(present) > 1:
            lr = LogisticRegression(C=1.0, max_iter=2000,
                                    class_weight="balanced" if self.class_weight == "balanced" else None)
            lr.fit((S - mean) / std, y)
            if len(present) == 2:  # one logit z: softmax([0, z]) = sigmoid(z)
                W[present[1]], b[present[1]] = lr.coef_[0], lr.intercept_[0]
            else:
                W[present], b[present] = lr.coef_, lr.intercept_
        return mean, std, W, b

    def _classify_scores(self, data: Prepared, rows, module) -> tuple[np.ndarray, float]:
        """(predicted codes, mean cross-entropy) of ``module`` on ``rows``."""
        base, lengths = data.extra["base"], data.extra["lengths"]
        module.eval()
        idx = torch.as_tensor(rows, dtype=torch.long, device=base.device)
        y = torch.as_tensor(data.labels.codes[rows], dtype=torch.long, device=base.device)
        with torch.no_grad():
            L = lengths[idx]
            logits = module(base[idx, : int(L.max())], L)
            ce = float(torch.nn.functional.cross_entropy(logits, y))
        return logits.argmax(1).cpu().numpy(), ce

    # -- the linear autoregressive path and the baselines of a forecaster ----------------------
    def _fit_ar(self, data: Prepared, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Ridge AR(p) on every one-step window of the sequences ``rows`` (standardised units)."""
        base, lengths, F, p = data.extra["base"], data.extra["lengths_np"], self.n_features, self.ar_order
        r = np.concatenate([np.full(lengths[i] - 1, i) for i in rows])
        c = np.concatenate([np.arange(1, lengths[i]) for i in rows])
        r_t, c_t = (torch.as_tensor(a, dtype=torch.long, device=base.device) for a in (r, c))
        idx = (c_t[:, None] - p + torch.arange(p, device=base.device)[None, :]).clamp_min(0)
        X = base[r_t[:, None], idx, :F].flatten(1).cpu().numpy()
        Y = base[r_t, c_t, :F].cpu().numpy()
        W, b = fit_ridge(X, Y)
        return torch.tensor(W, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)

    def _window_errors(self, data: Prepared, rows: np.ndarray, module=None) -> dict[str, float]:
        """Mean squared forecast error (standardised units) over every validation window of
        ``rows``: the network's, linear AR's and persistence's."""
        fields = self._fields(rows, data, data.extra["base"].device)
        base, F, h = data.extra["base"], self.n_features, self.horizon
        W, b = (t.to(base.device) for t in data.extra["ar"])
        module = module if module is not None else self.module
        module.eval()
        sums, n = {"network": 0.0, "ar": 0.0, "persistence": 0.0}, 0
        with torch.no_grad():
            for start in range(0, len(fields["row"]), 1024):
                row, cut = fields["row"][start : start + 1024], fields["cut"][start : start + 1024]
                T = int(cut.max())
                x = base[row, :T] * step_mask(cut, T)[:, :, None]
                idx = cut[:, None] + torch.arange(h, device=cut.device)[None, :]
                target = base[row[:, None], idx][:, :, :F]
                preds = {"network": module(x, cut), "ar": ar_forecast(x, cut, W, b, self.ar_order, F, h),
                         "persistence": persistence_forecast(x, cut, F, h)}
                for k, pred in preds.items():
                    sums[k] += float(((pred - target) ** 2).mean(dim=(1, 2)).sum())
                n += len(row)
        return {**{k: v / max(n, 1) for k, v in sums.items()}, "n": n}

    def _after_fit(self, data: Prepared, train_rows, val_rows, val, gen) -> None:
        if self.task == "classify" and self.linear_init:
            kept = False
            if len(val_rows):
                _, ce = self._classify_scores(data, val_rows, self.module)
                start = self._make_module(data.n_in).to(data.extra["base"].device)
                start.set_linear(*self._fit_logistic(data, train_rows))
                _, ce_start = self._classify_scores(data, val_rows, start)
                if ce > ce_start:  # training did not beat its start on the held-out sequences
                    self.module.set_linear(*self._fit_logistic(data, train_rows))
                    kept = True
            data.params["kept_linear_start"] = kept
        if self.task != "forecast" or not self.linear_init:
            return
        # early stopping kept the start ("epoch 0") when no epoch beat it on the validation windows
        h = self.history
        kept = bool(self.config.early_stopping and h is not None and h.epoch and h.best_epoch == 0)
        if len(val_rows) and not kept:
            err = self._window_errors(data, val_rows)
            if err["network"] > err["ar"]:
                # training did not beat its linear start on held-out windows: keep the start
                self.module.set_ar(*data.extra["ar"])
                kept = True
        data.params["kept_linear_start"] = kept

    def _baseline(self, data: Prepared, train_rows, val_rows):
        if self.task == "classify" and len(val_rows):
            from sklearn.ensemble import RandomForestClassifier
            from sklearn.metrics import f1_score

            S, codes = data.extra["summary"], data.labels.codes
            rf = RandomForestClassifier(n_estimators=200, random_state=int(self.config.resolved_seed), n_jobs=1)
            rf.fit(S[train_rows], codes[train_rows])
            pred, _ = self._classify_scores(data, val_rows, self.module)
            y = codes[val_rows]
            return baseline_record(method="random forest on summary features", metric="macro-F1",
                                   network=f1_score(y, pred, average="macro"),
                                   baseline=f1_score(y, rf.predict(S[val_rows]), average="macro"),
                                   n=len(val_rows), unit="held-out sequences")
        if self.task != "forecast" or not len(val_rows):
            return None
        err = self._window_errors(data, val_rows)
        return baseline_record(method=f"linear AR({self.ar_order})", metric="forecast MSE (standardised)",
                               network=err["network"], baseline=err["ar"], n=err["n"], higher_is_better=False,
                               unit="held-out windows", persistence=err["persistence"])

    def _refit_linear(self, data: Prepared, train_rows, val_rows) -> None:
        """A forecaster's autoregressive path fitted again on every window of all the training
        sequences, validation sequences included, once early stopping and the baseline have used
        them; the recurrent part beside it is kept as trained."""
        if self.task != "forecast" or not self.linear_init or not len(val_rows):
            return
        W, b = self._fit_ar(data, data.rows)
        self.module.ar_weight.copy_(W.to(self.module.ar_weight))
        self.module.ar_bias.copy_(b.to(self.module.ar_bias))
        data.params["ar_refit_sequences"] = int(len(data.rows))

    def _loaders(self, data, train_rows, val_rows, gen, device, run):
        fields, val_fields = (self._fields(rows, data, device) for rows in (train_rows, val_rows))
        data.params.update(n_train_sequences=int(len(train_rows)), n_validation_sequences=int(len(val_rows)))
        bs = self.config.batch_size
        if data.labels is not None and self.class_weight == "sampling":
            train = BalancedLoader(fields, np.arange(len(fields["row"])), bs, class_of=fields["y"].cpu().numpy(),
                                   generator=gen, device=device)
        else:
            train = Loader(fields, np.arange(len(fields["row"])), bs, shuffle=True, generator=gen,
                           drop_single=True, device=device)
        n_val = len(val_fields["row"])
        val = Loader(val_fields, np.arange(n_val), max(bs, data.val_batch), device=device) if n_val else None
        return train, val, len(fields["row"])

    def _default_max_epochs(self, n_samples: int, data: Prepared) -> int:
        return default_max_epochs(n_samples, self.config.batch_size)

    def _forecastable(self, seqs: Sequences) -> np.ndarray:
        h = self.horizon
        longest = int(seqs.lengths.max())
        if longest < h + 1:
            raise ValueError(
                f"horizon={h} is too long for these sequences: training a forecaster needs at least one "
                f"step of history plus {h} to predict (length >= {h + 1}); the longest has {longest} step(s). "
                "Lower horizon or use longer sequences."
            )
        rows = np.flatnonzero(seqs.lengths >= h + 1)
        short = seqs.n - len(rows)
        if short:
            warnings.warn(f"{short} sequence(s) shorter than horizon + 1 = {h + 1} steps are left out of the "
                          "forecaster's training (they can still be forecast).", UserWarning, stacklevel=3)
        if len(rows) < 2:
            raise ValueError(f"Only {len(rows)} sequence(s) have at least horizon + 1 = {h + 1} steps; need 2 or more.")
        return rows

    def _fields(self, rows: np.ndarray, data: Prepared, device) -> dict:
        """Per-sample loader fields of ``rows``. Forecasting: every cut of every sequence
        (history = steps before the cut, target = the ``horizon`` steps after), split by sequence."""
        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)

        if self.task == "forecast":
            lengths = data.extra["lengths_np"]
            cuts = [np.arange(1, lengths[i] - self.horizon + 1) for i in rows]
            r = np.concatenate([np.full(len(c), i) for i, c in zip(rows, cuts)]) if len(cuts) else np.zeros(0)
            c = np.concatenate(cuts) if len(cuts) else np.zeros(0)
            return {"row": t(r), "cut": t(c)}
        fields = {"row": t(rows)}
        if self.task == "classify":
            fields["y"] = t(data.labels.codes[rows])
        return fields

    def _make_module(self, n_in: int):
        cfg, width, depth = self.config, self.hidden[0], len(self.hidden)
        self.n_in = n_in
        if self.task == "classify":
            return SequenceClassifierModule(n_in, len(self.classes), width, depth, cell=self.cell,
                                            bidirectional=self.bidirectional, dropout=cfg.dropout,
                                            activation=cfg.activation, linear=self.linear_init)
        if self.task == "embed":
            return SequenceAutoencoderModule(n_in, self.n_latent, width, depth, cell=self.cell,
                                             bidirectional=self.bidirectional, dropout=cfg.dropout)
        return ForecasterModule(n_in, self.n_features, self.horizon, width, depth, cell=self.cell, dropout=cfg.dropout,
                                ar_order=self.ar_order if self.linear_init else 0)

    def _step(self, data: Prepared):
        task, noise, F, h = self.task, self.config.input_noise, self.n_features, self.horizon
        base, lengths, tf = data.extra["base"], data.extra["lengths"], self.teacher_forcing
        weights = data.class_weight

        def step(module, batch: dict, training: bool) -> torch.Tensor:
            row = batch["row"]
            if task == "forecast":
                cut = batch["cut"]
                T = int(cut.max())
                x = base[row, :T] * step_mask(cut, T)[:, :, None]  # the future is zeroed, never read
                idx = cut[:, None] + torch.arange(h, device=cut.device)[None, :]
                target = base[row[:, None], idx][:, :, :F]
                if training and noise > 0:
                    x = x + noise * torch.randn_like(x) * step_mask(cut, T)[:, :, None]
                pred = module(x, cut, teacher=target if training else None, teacher_forcing=tf if training else 0.0)
                return ((pred - target) ** 2).mean(dim=(1, 2))
            L = lengths[row]
            T = int(L.max())
            x = base[row, :T]
            if training and noise > 0:
                x = x + noise * torch.randn_like(x) * step_mask(L, T)[:, :, None]
            if task == "classify":
                logits = module(x, L)
                w = None if weights is None else weights.to(logits.device)
                return torch.nn.functional.cross_entropy(logits, batch["y"], weight=w, reduction="none")
            out = module(x, L)["out"]
            mask = step_mask(L, T)[:, :, None].float()
            target = base[row, :T]
            return (((out - target) ** 2) * mask).sum(dim=(1, 2)) / (L.float() * x.shape[2])

        return step

    # -- inference ------------------------------------------------------------------------------
    def _require_fitted(self, task: str | None = None):
        super()._require_fitted()
        if task is not None and self.task != task:
            verbs = {"classify": "predict / predict_proba", "embed": "transform", "forecast": "forecast"}
            raise ValueError(f"This model was trained to {self.task}; use .{verbs[self.task]}(...) "
                             f"(it cannot {task}).")

    def _batches(self, adata: AnnData, sequence_key: str | None, length_key: str | None, batch_size: int):
        seqs = get_sequences(adata, key=sequence_key or self.sequence_key, length_key=length_key or self.length_key)
        raw = self._inputs(seqs, self.features)
        device = next(self.module.parameters()).device
        self.module.eval()
        for start in range(0, seqs.n, batch_size):
            L = torch.from_numpy(seqs.lengths[start : start + batch_size]).to(device)
            T = int(L.max())
            x = torch.from_numpy(np.ascontiguousarray(raw[start : start + batch_size, :T])).to(device)
            yield start, self._standardise(x, L), L, raw[start : start + batch_size], seqs

    def predict_proba(self, adata: AnnData, *, sequence_key: str | None = None, length_key: str | None = None,
                      batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (n, classes), columns in the order of ``self.classes``."""
        self._require_fitted("classify")
        out = []
        with torch.inference_mode():
            for _, x, L, _, _ in self._batches(adata, sequence_key, length_key, batch_size):
                out.append(torch.softmax(self.module(x, L), dim=1).cpu().numpy())
        return np.concatenate(out)

    def predict(self, adata: AnnData, *, min_confidence: float = 0.0, **kwargs) -> pd.Categorical:
        """The most probable class of each sequence (a ``pandas.Categorical`` over ``classes``);
        ``"Unassigned"`` where its probability is below ``min_confidence``."""
        proba = self.predict_proba(adata, **kwargs)
        return as_categorical(labels_from_proba(proba, self.classes, min_confidence)[0], self.classes)

    def transform(self, adata: AnnData, *, sequence_key: str | None = None, length_key: str | None = None,
                  batch_size: int = 1024) -> np.ndarray:
        """The embedding of each sequence (n, n_latent)."""
        self._require_fitted("embed")
        out = []
        with torch.inference_mode():
            for _, x, L, _, _ in self._batches(adata, sequence_key, length_key, batch_size):
                out.append(self.module.encode(x, L).cpu().numpy())
        return np.concatenate(out)

    def reconstruct(self, adata: AnnData, **kwargs) -> np.ndarray:
        """The autoencoder's reconstruction (n, T, F) in the data's units (zeros on padding)."""
        self._require_fitted("embed")
        outs = []
        with torch.inference_mode():
            for _, x, L, raw, _ in self._batches(adata, kwargs.get("sequence_key"), kwargs.get("length_key"), 1024):
                y = self.module(x, L)["out"] * self.std.to(x.device) + self.mean.to(x.device)
                y = y * step_mask(L, x.shape[1])[:, :, None]
                full = np.zeros(raw.shape, dtype=np.float32)
                full[:, : y.shape[1]] = y.cpu().numpy()
                outs.append(full[:, :, : self.n_features])
        return np.concatenate(outs)

    def forecast(self, adata: AnnData, *, sequence_key: str | None = None, length_key: str | None = None,
                 batch_size: int = 1024) -> np.ndarray:
        """The next ``horizon`` steps after each sequence's last real step, (n, horizon, features),
        in the data's units. With ``use_time``, steps are the next observations (spacing as in
        training)."""
        self._require_fitted("forecast")
        out = []
        F = self.n_features
        with torch.inference_mode():
            for _, x, L, _, _ in self._batches(adata, sequence_key, length_key, batch_size):
                pred = self.module(x, L)
                out.append((pred * self.std[:F].to(x.device) + self.mean[:F].to(x.device)).cpu().numpy())
        return np.concatenate(out)

    # -- save / load ----------------------------------------------------------------------------
    def _get_state(self):
        self._require_fitted()
        config = {
            "architecture": {"task": self.task, "cell": self.cell, "hidden": list(self.hidden),
                             "bidirectional": self.bidirectional, "n_latent": self.n_latent,
                             "horizon": self.horizon, "n_in": self.n_in, "n_features": self.n_features,
                             "dropout": self.config.dropout, "activation": self.config.activation,
                             "linear_init": self.linear_init, "ar_order": self.ar_order},
            "teacher_forcing": self.teacher_forcing, "use_time": self.use_time, "use_time_": self.use_time_,
            "class_weight": self.class_weight, "features": self.features, "classes": self.classes,
            "labels_key": self.labels_key, "sequence_key": self.sequence_key, "length_key": self.length_key,
            "train_config": self.config.to_dict(),
            "params": {k: v for k, v in self.params.items() if k != "environment"},
            "history": self.history.to_dict() if self.history else None,
        }
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors["standardise.mean"], tensors["standardise.std"] = self.mean, self.std
        return config, tensors

    def _set_state(self, config, tensors):
        from ..train.loop import History

        a = config["architecture"]
        self.task, self.cell = a["task"], a["cell"]
        # older models stored one width and a number of layers
        self.hidden = [int(a["hidden"])] * int(a["n_layers"]) if "n_layers" in a else [int(h) for h in a["hidden"]]
        self.bidirectional, self.n_latent, self.horizon = a["bidirectional"], a["n_latent"], a["horizon"]
        self.n_features = a["n_features"]
        # models saved before the linear paths had none
        self.linear_init, self.ar_order = bool(a.get("linear_init", False)), int(a.get("ar_order", 8))
        tc = dict(config["train_config"])
        tc["augment"] = tuple(tc.get("augment") or ())
        self.config = TrainConfig(**tc)
        self.teacher_forcing, self.use_time, self.use_time_ = config["teacher_forcing"], config["use_time"], config["use_time_"]
        self.class_weight, self.features, self.classes = config["class_weight"], config["features"], config["classes"]
        self.labels_key, self.sequence_key, self.length_key = config["labels_key"], config["sequence_key"], config["length_key"]
        self.params = config.get("params", {})
        h = config.get("history")
        self.history = History(**h) if h else None
        self.mean, self.std = tensors["standardise.mean"], tensors["standardise.std"]
        self.module = self._make_module(a["n_in"])
        self.module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
        self.module.eval()
