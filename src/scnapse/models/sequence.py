"""``SequenceModel``: GRU/LSTM networks on per-cell traces and time-course sequences.

One class, three tasks: ``"classify"`` (cross-entropy on a label per sequence), ``"embed"``
(sequence autoencoder, masked mse; the code is the embedding) and ``"forecast"`` (the next
``horizon`` steps, mse). Sequences come from a sequence AnnData (:mod:`scnapse.ts`). Features are
standardised with means / standard deviations over the real steps of the training sequences,
recorded in the model and applied unchanged later.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._settings import logger, resolve_device
from ..nn.rnn import (
    ForecasterModule,
    SequenceAutoencoderModule,
    SequenceClassifierModule,
    check_cell,
    step_mask,
)
from ..train import Loader, RunOptions, TrainConfig, environment, fit, seed_everything, split_indices
from ..ts._sequences import Sequences, get_sequences, is_irregular, time_steps
from ._base import BaseModel

Task = Literal["classify", "embed", "forecast"]
TASKS = ("classify", "embed", "forecast")
TASK_COST = {"classify": "cross_entropy", "embed": "mse", "forecast": "mse"}
TIME_FEATURE = "_dt"


def default_max_epochs(n_samples: int, batch_size: int) -> int:
    """Passes over the data for about 3,000 optimizer steps, between 20 and 300 epochs (early
    stopping usually ends sooner). Small data sets get more passes: a few hundred sequences make
    only a handful of mini-batches per epoch."""
    steps_per_epoch = max(1, -(-n_samples // max(batch_size, 1)))
    return int(np.clip(round(3_000 / steps_per_epoch), 20, 300))


class SequenceModel(BaseModel):
    """A recurrent network on sequences: classify, embed or forecast.

    Parameters
    ----------
    task
        ``"classify"``, ``"embed"`` or ``"forecast"``.
    cell
        ``"gru"`` or ``"lstm"``.
    hidden
        Hidden units per recurrent layer.
    n_layers
        Stacked recurrent layers (``dropout`` applies between them and before the head).
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
    **train_options
        :class:`~scnapse.train.TrainConfig` fields (lr, batch_size, max_epochs, early_stopping,
        dropout, l2, optimizer, seed, device, …). The cost is fixed by the task.
    """

    kind = "SequenceModel"

    def __init__(
        self,
        task: Task = "classify",
        *,
        cell: str = "gru",
        hidden: int = 64,
        n_layers: int = 1,
        bidirectional: bool | None = None,
        n_latent: int = 8,
        horizon: int = 3,
        teacher_forcing: float = 0.5,
        use_time: bool | None = None,
        class_weight: str | None = None,
        **train_options,
    ):
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not valid; choose one of {list(TASKS)}.")
        self.config = TrainConfig.from_kwargs(**train_options)
        if self.config.cost is not None and self.config.cost != TASK_COST[task]:
            raise ValueError(f"cost={self.config.cost!r} does not fit task={task!r}; its cost is "
                             f"{TASK_COST[task]!r} (leave cost unset).")
        self.config = self.config.replace(cost=TASK_COST[task])
        check_cell(cell)
        for name, value, lo in (("hidden", hidden, 1), ("n_layers", n_layers, 1), ("n_latent", n_latent, 1),
                                ("horizon", horizon, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{name}={value!r} must be an integer >= {lo}.")
        if not 0 <= float(teacher_forcing) <= 1:
            raise ValueError(f"teacher_forcing={teacher_forcing!r} must be between 0 and 1.")
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight={class_weight!r}; choose None or 'balanced'.")
        if task == "forecast" and bidirectional:
            raise ValueError("A forecaster cannot be bidirectional: it would read the future it must predict.")
        self.task = task
        self.cell = cell
        self.hidden, self.n_layers = int(hidden), int(n_layers)
        self.bidirectional = (task != "forecast") if bidirectional is None else bool(bidirectional)
        self.n_latent, self.horizon = int(n_latent), int(horizon)
        self.teacher_forcing = float(teacher_forcing)
        self.use_time = use_time
        self.class_weight = class_weight
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
        """Train on the sequences of ``adata`` (``obsm[sequence_key]``, ``obs[length_key]``)."""
        run = RunOptions.resolve(run, run_options)
        seqs = get_sequences(adata, key=sequence_key, length_key=length_key)
        cfg = self.config
        seed = cfg.resolved_seed
        device = resolve_device(cfg.device)
        gen = seed_everything(seed, deterministic=cfg.deterministic)
        self.features = list(seqs.features)
        self.n_features = len(self.features)
        self.use_time_ = bool(is_irregular(seqs.time, seqs.lengths)) if self.use_time is None else bool(self.use_time)
        self.sequence_key, self.length_key = sequence_key, length_key

        rows = np.arange(seqs.n)
        y = None
        if self.task == "classify":
            rows, y = self._labels(adata, labels_key)
        elif self.task == "forecast":
            rows = self._forecastable(seqs)
        raw = self._inputs(seqs, self.features)
        lengths_all = seqs.lengths
        # standardisation from the real steps of the sequences used for training
        real = step_mask(torch.from_numpy(lengths_all[rows]), raw.shape[1]).numpy()
        vals = raw[rows][real].astype(np.float64)
        mean, std = vals.mean(axis=0), vals.std(axis=0)
        std[std < 1e-8] = 1.0
        self.mean, self.std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

        n_in = raw.shape[2]
        self._build(n_in)
        self.module.to(device)
        base = torch.from_numpy(raw).to(device)
        lengths = torch.from_numpy(lengths_all).to(device)
        base = self._standardise(base, lengths)

        stratify = y if self.task == "classify" else None
        tr, va = split_indices(len(rows), cfg.validation_fraction, gen, stratify=stratify)
        train_rows, val_rows = rows[tr], rows[va]
        if len(train_rows) < 2:
            raise ValueError(f"Training needs at least 2 sequences; {len(train_rows)} are left for training.")
        fields, val_fields, n_samples = self._fields(train_rows, val_rows, y, tr, va, lengths_all, device)
        train = Loader(fields, np.arange(len(fields["row"])), cfg.batch_size, shuffle=True, generator=gen,
                       drop_single=True, device=device)
        val = (Loader(val_fields, np.arange(len(val_fields["row"])), max(cfg.batch_size, 512), device=device)
               if val_fields is not None and len(val_fields["row"]) else None)
        max_epochs = cfg.max_epochs or default_max_epochs(n_samples, cfg.batch_size)
        self.history = fit(self.module, self._step(base, lengths), train, val, cfg, max_epochs=max_epochs,
                           **run.fit_kwargs(), description=f"rnn-{self.task}")
        self.module.eval()
        self.params = {
            "task": self.task, "cell": self.cell, "hidden": self.hidden, "n_layers": self.n_layers,
            "bidirectional": self.bidirectional, "n_latent": self.n_latent if self.task == "embed" else None,
            "horizon": self.horizon if self.task == "forecast" else None,
            "teacher_forcing": self.teacher_forcing if self.task == "forecast" else None,
            "use_time": self.use_time_, "class_weight": self.class_weight, "labels_key": labels_key,
            "classes": self.classes, "features": self.features, "sequence_key": sequence_key,
            "length_key": length_key, "n_sequences": int(len(rows)), "n_train_sequences": int(len(train_rows)),
            "n_validation_sequences": int(len(val_rows)), "n_training_samples": int(n_samples),
            "padded_length": int(raw.shape[1]), **cfg.to_dict(), "seed": seed, "max_epochs": max_epochs,
            "device": str(device), "environment": environment(device),
        }
        logger.info(f"sequence {self.task}: {self.history.epoch[-1] if self.history.epoch else 0} epochs "
                    f"({self.history.stopped}), best epoch {self.history.best_epoch}, on {device}")
        return self

    def _labels(self, adata: AnnData, labels_key: str | None):
        if labels_key is None:
            raise ValueError("A sequence classifier needs labels_key= naming the obs column with each sequence's label.")
        if labels_key not in adata.obs.columns:
            raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
        lab = adata.obs[labels_key]
        known = lab.notna().to_numpy()
        if not known.any():
            raise ValueError(f"adata.obs[{labels_key!r}] holds no label (all missing).")
        values = lab[known].astype(str).to_numpy()
        classes = sorted(pd.unique(values))
        if len(classes) < 2:
            raise ValueError(f"adata.obs[{labels_key!r}] has one class only ({classes}); a classifier needs two or more.")
        counts = pd.Series(values).value_counts()
        if counts.min() < 2:
            raise ValueError(f"Class(es) {list(counts[counts < 2].index)} of {labels_key!r} have one sequence; "
                             "each class needs at least 2 (drop or merge rare classes).")
        self.classes, self.labels_key = classes, labels_key
        codes = pd.Index(classes).get_indexer(values)
        if not known.all():
            logger.info(f"{int((~known).sum())} sequence(s) without a label are left out of training.")
        freq = np.bincount(codes, minlength=len(classes)).astype(np.float64)
        w = (len(codes) / (len(classes) * freq)) if self.class_weight == "balanced" else np.ones(len(classes))
        self.class_weights = torch.tensor(w, dtype=torch.float32)
        return np.flatnonzero(known), codes

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

    def _fields(self, train_rows, val_rows, y, tr, va, lengths, device):
        """Per-sample fields for the loader. Forecasting: every cut of every sequence (history =
        steps before the cut, target = the ``horizon`` steps after), split by sequence."""
        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)

        if self.task == "forecast":
            def windows(rows):
                r, c = [], []
                for i in rows:
                    cuts = np.arange(1, lengths[i] - self.horizon + 1)
                    r.append(np.full(len(cuts), i))
                    c.append(cuts)
                return (np.concatenate(r), np.concatenate(c)) if len(r) else (np.zeros(0), np.zeros(0))
            r_tr, c_tr = windows(train_rows)
            r_va, c_va = windows(val_rows)
            return ({"row": t(r_tr), "cut": t(c_tr)}, {"row": t(r_va), "cut": t(c_va)}, len(r_tr))
        fields = {"row": t(train_rows)}
        val = {"row": t(val_rows)}
        if self.task == "classify":
            fields["y"], val["y"] = t(y[tr]), t(y[va])
        return fields, val, len(train_rows)

    def _build(self, n_in: int) -> None:
        cfg = self.config
        if self.task == "classify":
            self.module = SequenceClassifierModule(
                n_in, len(self.classes), self.hidden, self.n_layers, cell=self.cell,
                bidirectional=self.bidirectional, dropout=cfg.dropout, activation=cfg.activation)
        elif self.task == "embed":
            self.module = SequenceAutoencoderModule(
                n_in, self.n_latent, self.hidden, self.n_layers, cell=self.cell,
                bidirectional=self.bidirectional, dropout=cfg.dropout)
        else:
            self.module = ForecasterModule(n_in, self.n_features, self.horizon, self.hidden, self.n_layers,
                                           cell=self.cell, dropout=cfg.dropout)
        self.n_in = n_in

    def _step(self, base: torch.Tensor, lengths: torch.Tensor):
        task, noise, F, h = self.task, self.config.input_noise, self.n_features, self.horizon
        tf = self.teacher_forcing
        weights = getattr(self, "class_weights", None)

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

    def predict(self, adata: AnnData, **kwargs) -> np.ndarray:
        """The most probable class of each sequence."""
        proba = self.predict_proba(adata, **kwargs)
        return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]

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
            "architecture": {"task": self.task, "cell": self.cell, "hidden": self.hidden, "n_layers": self.n_layers,
                             "bidirectional": self.bidirectional, "n_latent": self.n_latent,
                             "horizon": self.horizon, "n_in": self.n_in, "n_features": self.n_features,
                             "dropout": self.config.dropout, "activation": self.config.activation},
            "teacher_forcing": self.teacher_forcing, "use_time": self.use_time, "use_time_": self.use_time_,
            "class_weight": self.class_weight, "features": self.features, "classes": self.classes,
            "labels_key": self.labels_key, "sequence_key": self.sequence_key, "length_key": self.length_key,
            "train_config": self.config.to_dict(),
            "params": {k: v for k, v in self.params.items() if k != "environment"},
            "history": self.history.to_dict() if self.history else None,
        }
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors["standardise.mean"], tensors["standardise.std"] = self.mean, self.std
        if getattr(self, "class_weights", None) is not None:
            tensors["class_weights"] = self.class_weights
        return config, tensors

    def _set_state(self, config, tensors):
        from ..train.loop import History

        a = config["architecture"]
        self.task, self.cell, self.hidden, self.n_layers = a["task"], a["cell"], a["hidden"], a["n_layers"]
        self.bidirectional, self.n_latent, self.horizon = a["bidirectional"], a["n_latent"], a["horizon"]
        self.n_features = a["n_features"]
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
        self.class_weights = tensors.get("class_weights")
        self._build(a["n_in"])
        self.module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
        self.module.eval()
