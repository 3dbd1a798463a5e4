"""The model template every family follows, and saving / loading (safetensors + JSON, no pickle).

:meth:`BaseModel._fit` is the one training procedure::

    seed, device → _prepare(adata, ...) → split (stratified by class where there are labels)
    → class weights → _build(data, train_rows) → _loaders(...) → train.fit(...) → _after_fit(...)
    → _baseline(...) → _refit_linear(...)
    → params (every resolved choice, seed, device, run options, versions) and history

A family supplies the hooks: ``_prepare`` (check its input, encode labels with
:func:`~scnapse.models._labels.encode_labels`, fit its preprocessing; returns a :class:`Prepared`),
``_build`` (the ``nn.Module``), ``_step`` (one training step: per-sample losses),
``_default_max_epochs`` and, if needed, ``_loaders``, ``_after_fit`` and ``_baseline`` (the
classical method's score on the same held-out cells, next to the network's: see
:func:`baseline_record`) and ``_refit_linear`` (once the held-out cells have served for early
stopping and the baseline, the family's classical linear path is fitted again on all the
training rows, held-out ones included). Checkpoints and resume,
mixed precision, shuffled chunks, DDP under ``torchrun``, progress, callbacks and cancel come from
:class:`~scnapse.train.RunOptions` through the same code for every family. Training defaults that
differ from :class:`~scnapse.train.TrainConfig`'s are declared once per family, in
``train_defaults``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ._labels import BalancedLoader, Labels, balanced_weights

FORMAT = "scnapse-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def check_count(value, name: str, minimum: int = 1) -> int:
    """A whole number ``>= minimum`` (``2.7``, ``"10"`` or ``True`` are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}.")
    return int(value)


def check_number(value, name: str, minimum: float = 0.0) -> float:
    """A finite real number ``>= minimum`` (a string, ``None``, NaN or infinity is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}={value!r} must be a number >= {minimum:g}.")
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name}={value!r} must be a finite number >= {minimum:g}.")
    return float(value)


def check_widths(value, name: str = "hidden", *, allow_empty: bool = True) -> list[int]:
    """Layer widths as a list of positive ints; a string, a float or a bare number is refused
    (``hidden="128"`` would otherwise read as widths 1, 2, 8)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}={value!r} must be a sequence of layer widths, e.g. {name}=(128,) or (256, 128).")
    widths = list(value)
    if any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in widths):
        raise ValueError(f"{name}={value!r}: layer widths must be positive integers, e.g. (256, 128).")
    if not widths and not allow_empty:
        raise ValueError(f"{name}={value!r} must hold at least one width, e.g. (16, 32, 64).")
    return [int(w) for w in widths]


@dataclass
class Prepared:
    """What a family's ``_prepare`` hands the template.

    ``fields`` are the loader's tensors (or :class:`~scnapse.train.Matrix`), indexed by ``rows``
    (the rows that may train: all cells, the labelled ones, the forecastable sequences);
    ``labels`` the encoded labels of a classifier (the split is then stratified by class);
    ``params`` what the family records in ``params``; ``extra`` anything its other hooks need."""

    fields: dict
    rows: np.ndarray
    n_in: int
    labels: Labels | None = None
    params: dict = field(default_factory=dict)
    val_batch: int = 1024
    extra: dict[str, Any] = field(default_factory=dict)
    class_weight: torch.Tensor | None = None  # set by the template from ``class_weight``


def baseline_record(*, method: str, metric: str, network: float, baseline: float, n: int,
                    higher_is_better: bool = True, unit: str = "held-out cells", **extra) -> dict:
    """What ``uns[key]["baseline"]`` holds: the classical ``method``'s ``metric`` and the
    network's on the same ``n`` held-out samples, whether the network is better, and a sentence
    saying so (the panels' status line shows it)."""
    network, baseline = float(network), float(baseline)
    better = network > baseline if higher_is_better else network < baseline
    text = f"network {metric} {network:.3g} · {method} {baseline:.3g} on the same {n} {unit}"
    return {"method": method, "metric": metric, "network": network, "baseline": baseline, "n": int(n),
            "higher_is_better": bool(higher_is_better), "network_better": bool(better), "text": text, **extra}


def warn_if_not_better(record: dict, description: str) -> None:
    """Warn when the network scores worse than the classical method (a tie, e.g. both perfect on
    easy data, is not worth a warning)."""
    import warnings

    if not record["network_better"] and record["network"] != record["baseline"]:
        warnings.warn(f"{description}: the network is not better than {record['method']} "
                      f"({record['text']}).", UserWarning, stacklevel=4)


class BaseModel:
    """The training template and save/load of every scnapse model (see the module docstring).

    Subclasses implement the training hooks and ``_get_state() -> (config: dict, tensors:
    dict[str, Tensor])`` / ``_set_state(config, tensors)``. A saved model is a folder with
    ``config.json`` (what the model expects: genes, classes, shapes, preprocessing, how it was
    trained) and ``model.safetensors`` (its weights and any arrays).
    """

    kind: ClassVar[str] = "BaseModel"
    #: how to train one, for the "not trained yet" message
    fit_hint: ClassVar[str] = ".fit(adata)"
    #: the family's training defaults that differ from TrainConfig's (declared once, here)
    train_defaults: ClassVar[dict] = {}
    module: torch.nn.Module | None = None
    class_weight: str | None = None
    #: the classical method's score beside the network's (set by training; see ``_baseline``)
    baseline: dict | None = None
    #: the kind of training, for the default thread count (``scnapse._settings.AUTO_THREAD_CAP``)
    workload: ClassVar[str | None] = None
    #: a dense network: ``"auto"`` gives it one thread on mini-batches of at most
    #: ``scnapse._settings.SMALL_BATCH`` samples or small first layers ("small-step" work)
    dense: ClassVar[bool] = False

    # -- the training template ------------------------------------------------------------------
    def _fit(self, adata, run, run_options: dict, **data_options):
        """Train on ``adata``: the steps of the module docstring. Returns ``self``."""
        from .._settings import note_cpu_sample
        from ..train import RunOptions, thread_limits

        run = RunOptions.resolve(run, run_options)
        try:
            with thread_limits(run.n_threads(self._thread_workload(adata))) as n:
                # "auto" measures the load once: the count used is the count recorded
                return self._fit_run(adata, dataclasses.replace(run, threads=n), **data_options)
        finally:
            note_cpu_sample()  # the next step's "auto" measures the load from here

    def _thread_workload(self, adata=None) -> str | None:
        """The kind of training (on ``adata``, when given), for the default thread count."""
        return self.workload_for(self.config.batch_size, self._first_layer_size(adata))

    def _first_layer_size(self, adata) -> int | None:
        """Inputs × units of the network's first layer when trained on ``adata`` (``None``: not
        known), for the default thread count of a dense network."""
        return None

    @classmethod
    def workload_for(cls, batch_size: int, first_layer: int | None = None) -> str | None:
        """The kind of training on mini-batches of ``batch_size`` samples, for the default thread
        count: :data:`workload`, or ``"small-step"`` for a dense network whose steps are too small
        to share between threads: mini-batches of at most :data:`~scnapse._settings.SMALL_BATCH`
        samples, or fewer than :data:`~scnapse._settings.SMALL_STEP` multiply-adds in the first
        layer (``batch_size × first_layer``, ``first_layer`` its inputs × units) per step."""
        from .._settings import SMALL_BATCH, SMALL_STEP

        if cls.workload is None and cls.dense:
            if batch_size <= SMALL_BATCH or (first_layer is not None and batch_size * first_layer < SMALL_STEP):
                return "small-step"
        return cls.workload

    def _fit_run(self, adata, run, **data_options):
        """:meth:`_fit` with the run options resolved and the thread count set."""
        from .._settings import logger, resolve_device
        from ..train import environment, fit, seed_everything, split_indices
        from ..train.distributed import world_size

        cfg = self.config
        seed, device = cfg.resolved_seed, resolve_device(cfg.device)
        gen = seed_everything(seed, deterministic=cfg.deterministic)
        data = self._prepare(adata, device=device, **data_options)
        stratify = data.labels.codes[data.rows] if data.labels is not None else None
        tr, va = split_indices(len(data.rows), cfg.validation_fraction, gen, stratify=stratify)
        train_rows, val_rows = data.rows[tr], data.rows[va]
        if len(train_rows) < 2:
            raise ValueError(f"Training needs at least 2 {self._unit}; {len(train_rows)} are left for training.")
        if data.labels is not None and self.class_weight == "balanced":
            data.class_weight = balanced_weights(data.labels.codes[train_rows], len(data.labels.classes), device)
        self.module = self._build(data, train_rows, seed).to(device)
        train, val, n_samples = self._loaders(data, train_rows, val_rows, gen, device, run)
        max_epochs = cfg.max_epochs or self._default_max_epochs(n_samples, data)
        fit_kwargs = run.fit_kwargs()
        self.history = fit(self.module, self._step(data), train, val, cfg, max_epochs=max_epochs,
                           description=self._description, **fit_kwargs)
        self._after_fit(data, train_rows, val_rows, val, gen)
        self.baseline = self._baseline(data, train_rows, val_rows)
        if self.baseline:
            warn_if_not_better(self.baseline, self._description)
        self._refit_linear(data, train_rows, val_rows)
        checkpoint = fit_kwargs["checkpoint"]
        self.params = {
            **cfg.to_dict(), **data.params, "seed": seed,
            "max_epochs": max_epochs, "device": str(device), "n_train": int(len(train_rows)),
            "n_validation": int(len(val_rows)), "n_training_samples": int(n_samples),
            **run.to_dict(),  # threads: the count _fit resolved
            "world_size": world_size(), "resumed_from_epoch": checkpoint.restored_epoch if checkpoint else 0,
            "environment": environment(device),
        }
        h = self.history
        logger.info(f"{self._description}: {h.epoch[-1] if h.epoch else 0} epochs ({h.stopped}), "
                    f"best epoch {h.best_epoch}, on {device}{self._summary()}")
        return self

    @property
    def _unit(self) -> str:
        return "cells"

    @property
    def _description(self) -> str:
        return self.kind

    def _summary(self) -> str:
        return ""

    # the hooks every family defines (see the module docstring); the base says which one is missing
    def _prepare(self, adata, *, device, **data_options) -> Prepared:
        self._missing_hook("_prepare(adata, *, device, ...) -> Prepared")

    def _build(self, data: Prepared, train_rows: np.ndarray, seed: int) -> torch.nn.Module:
        self._missing_hook("_build(data, train_rows, seed) -> nn.Module")

    def _step(self, data: Prepared):
        self._missing_hook("_step(data) -> step(module, batch, training)")

    def _default_max_epochs(self, n_samples: int, data: Prepared) -> int:
        self._missing_hook("_default_max_epochs(n_samples, data) -> int")

    def _missing_hook(self, hook: str):
        raise TypeError(f"{type(self).__name__} cannot be trained: a model family defines {hook} "
                        "(see docs/architecture.md).")

    def _loaders(self, data: Prepared, train_rows, val_rows, gen, device, run):
        """``(train, validation, samples per epoch)``; class-balanced batches for ``"sampling"``."""
        from ..train import Loader

        bs = self.config.batch_size
        if data.labels is not None and self.class_weight == "sampling":
            train = BalancedLoader(data.fields, train_rows, bs, class_of=data.labels.codes[train_rows],
                                   generator=gen, device=device)
        else:
            train = Loader(data.fields, train_rows, bs, shuffle=True, generator=gen, drop_single=True,
                           device=device, chunk_size=run.chunk_size)
        val = Loader(data.fields, val_rows, max(bs, data.val_batch), device=device) if len(val_rows) else None
        return train, val, len(train_rows)

    def _after_fit(self, data: Prepared, train_rows, val_rows, val, gen) -> None:
        """Work after training (calibration, ...); nothing by default."""

    def _baseline(self, data: Prepared, train_rows, val_rows) -> dict | None:
        """The classical method beside the network, scored on ``val_rows`` (the held-out cells the
        network was validated on): a :func:`baseline_record`, or ``None`` (nothing to compare)."""
        return None

    def _refit_linear(self, data: Prepared, train_rows, val_rows) -> None:
        """After :meth:`_baseline`: fit the classical linear path again on all of ``data.rows``
        (the validation rows served early stopping and the baseline; the final model learns from
        them too), recording what it did in ``data.params``. Nothing by default."""

    @classmethod
    def _config_from(cls, defaults: dict | None, train_options: dict):
        from ..train import TrainConfig

        return TrainConfig.from_kwargs({**cls.train_defaults, **(defaults or {})}, **train_options)

    def _require_fitted(self) -> None:
        if self.module is None:
            raise RuntimeError(f"This {self.kind} is not trained yet; call {self.fit_hint} first.")

    def to(self, device: str):
        """Move the trained model to ``device`` (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...); returns it."""
        from .._settings import resolve_device

        self._require_fitted()
        self.module.to(resolve_device(device))
        return self

    def _get_state(self) -> tuple[dict, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} cannot be saved")

    def _set_state(self, config: dict, tensors: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} cannot be loaded")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to the folder ``path`` (created; files in it are replaced atomically)."""
        from .. import __version__

        config, tensors = self._get_state()
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"{str(path)!r} is an existing file; a model is saved as a folder (config.json and "
                "model.safetensors). Give a folder path (it is created if missing)."
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"The folder {str(path)!r} for the model cannot be created: {err}") from None
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                "scnapse_version": __version__, **_jsonable(config)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        from ..pipeline.writer import atomic_path

        # atomic_path: a temporary file renamed over the target, with the usual file mode (0644
        # under umask 022, so others in a lab group can read a shared model), not mkstemp's 0600
        with atomic_path(path / WEIGHTS_FILE) as tmp:
            save_file(tensors, tmp)
        with atomic_path(path / CONFIG_FILE) as tmp, open(tmp, "w") as fh:
            json.dump(meta, fh, indent=1)
        return path

    @classmethod
    def read_config(cls, path: str | os.PathLike) -> dict:
        path = Path(path)
        cfg_file = path / CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"No saved model at {str(path)!r}.")
        if not path.is_dir() or not cfg_file.exists() or not (path / WEIGHTS_FILE).exists():
            raise ValueError(
                f"{str(path)!r} is not a scnapse model: a saved model is a folder with "
                f"{CONFIG_FILE} and {WEIGHTS_FILE} (written by model.save(path))."
            )
        try:
            meta = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(cfg_file)!r} is not a scnapse model config: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a scnapse model (its {CONFIG_FILE} has no scnapse format tag).")
        if int(meta.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was written by scnapse {meta.get('scnapse_version')} in model format "
                f"{meta.get('format_version')}; this scnapse reads format {FORMAT_VERSION} and older. "
                "Upgrade scnapse to load it."
            )
        return meta

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto"):
        """Load a model saved with :meth:`save`. Only tensors and JSON are read (no pickle)."""
        meta = cls.read_config(path)
        if meta.get("kind") != cls.kind:
            raise ValueError(
                f"{str(path)!r} holds a {meta.get('kind')} model, not a {cls.kind}; "
                f"load it with scnapse.models.{meta.get('kind')}.load."
            )
        try:
            tensors = load_file(str(Path(path) / WEIGHTS_FILE))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"The weights in {str(path)!r} cannot be read: {err}") from None
        obj = cls.__new__(cls)
        try:
            obj._set_state(meta, tensors)
        except (KeyError, TypeError, IndexError, RuntimeError) as err:
            what = f"has no {err}" if isinstance(err, KeyError) else f"does not fit its weights ({err})"
            raise ValueError(
                f"The saved {cls.kind} in {str(path)!r} is incomplete or damaged: its {CONFIG_FILE} {what}. "
                f"Save the model again with model.save(path) (written by scnapse {meta.get('scnapse_version')})."
            ) from None
        return obj
