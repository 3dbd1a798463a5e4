"""Runs of one training step side by side: one run per setting, same seed and split."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import copy_of, sanitize_for_uns
from .._settings import logger
from ..pipeline.registry import step as register
from ._tune import _tunable, _tunable_names
from ._tune_metrics import Scratch

_SWEEP = re.compile(r"^(log|lin):\s*([^.][^ ]*?)\s*\.\.\s*([^:]+?)\s*(?::\s*(\d+))?$")
#: what compare_runs sets itself in every run
_RESERVED = ("copy", "progress", "callback", "cancel", "run", "key_added")


def parse_values(key: str, values) -> list:
    """The values of one ``vary`` entry: a list as given, or a sweep written ``"log:lo..hi"`` /
    ``"log:lo..hi:N"`` (``N`` log-spaced values, default 5) or ``"lin:lo..hi:N"``."""
    if isinstance(values, str):
        m = _SWEEP.match(values.strip())
        if m is None:
            raise ValueError(f"vary[{key!r}] = {values!r}: write a list of values, or a sweep such as "
                             "'log:1e-5..1e-1' or 'log:1e-5..1e-1:9' (or 'lin:0..1:5').")
        kind, lo, hi, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4) or 5)
        if n < 2:
            raise ValueError(f"vary[{key!r}] = {values!r}: a sweep needs at least 2 values.")
        if kind == "log":
            if lo <= 0 or hi <= 0:
                raise ValueError(f"vary[{key!r}] = {values!r}: a log sweep needs positive bounds.")
            return [float(f"{v:.6g}") for v in np.logspace(np.log10(lo), np.log10(hi), n)]
        return [float(f"{v:.6g}") for v in np.linspace(lo, hi, n)]
    if isinstance(values, (list, tuple)) and len(values) >= 1:
        return list(values)
    raise ValueError(f"vary[{key!r}] = {values!r}: give a non-empty list of values or a sweep 'log:lo..hi'.")


def _label(setting: dict) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in setting.items())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def _record(before: dict, adata: AnnData) -> dict:
    """The ``uns`` record the step wrote (the new or replaced entry with a ``history``)."""
    for key, value in adata.uns.items():
        if (key not in before or before[key] is not value) and isinstance(value, Mapping) and "history" in value:
            return dict(value)
    return {}


@register("scnapse.tl.compare_runs")
def compare_runs(
    adata: AnnData,
    *,
    vary: Mapping,
    step: str | Callable = "autoencoder",
    fixed: Mapping | None = None,
    labels_key: str | None = None,
    seed: int = 0,
    device: str | None = None,
    keep_embeddings: bool = True,
    key_added: str = "compare_runs",
    copy: bool = False,
) -> AnnData | None:
    """Train one step once per setting (a grid over ``vary``) with the same seed and split, side by side.

    The lecture's experiments in one call: optimizers (``vary={"optimizer": ["sgd", "momentum",
    "rmsprop", "adam"]}``), regularization strengths (``{"l2": [0, 1e-4, 1e-2]}``) or the classic
    loss-vs-learning-rate sweep (``{"lr": "log:1e-5..1e-1"}``). Plot with :func:`scnapse.pl.compare_runs`.

    Parameters
    ----------
    adata
        The data the step trains on (preprocessed as the step expects). Only ``uns[key_added]``
        and, for embedding steps, one ``obsm`` entry per run are written.
    vary
        Parameter → values: a list (``["sgd", "adam"]``) or a sweep string ``"log:lo..hi"`` (5
        log-spaced values), ``"log:lo..hi:N"`` or ``"lin:lo..hi:N"``. Several keys make a grid
        (every combination, in the order given). Any ``TrainConfig`` field or option of the step.
    step
        Any training step: ``"autoencoder"``, ``"train_classifier"`` (or ``"classifier"``),
        ``"train_image_classifier"``, ``"sequence_embedding"``…, its public name or the function.
    fixed
        Options passed unchanged to every run (e.g. ``{"max_epochs": 30}``).
    labels_key
        ``obs`` column of labels: the classifier's classes, or, for an embedding step, the labels
        its 15-NN held-out accuracy (``knn_accuracy``) is scored on.
    seed
        The seed of every run (same initialisation draw and same validation split).
    device
        Device of every run (``None``: the settings' default).
    keep_embeddings
        Write each run's embedding to ``obsm["<obsm key>_<setting>"]`` (e.g.
        ``obsm["X_autoencoder_optimizer=adam"]``).
    key_added
        ``uns[key_added]`` gets the record.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    AnnData or None
        ``None``, or the annotated copy with ``copy=True``. ``uns[key_added]`` = ``{"table": one row
        per run (setting, the varied values, final_train_loss, final_val_loss, best_val_loss,
        best_epoch, epochs, accuracy / macro_f1 / knn_accuracy where labels exist, baseline where the
        step has one, seconds), "histories": {setting: {"train_loss", "val_loss"}}, "vary", "fixed",
        "step", "seed", "obsm_keys"}``.
    """
    spec = _tunable(step)
    if not isinstance(vary, Mapping) or not vary:
        raise ValueError("vary must be a dict of parameter → values, e.g. {'optimizer': ['sgd', 'adam']}.")
    grid = {str(k): parse_values(str(k), v) for k, v in vary.items()}
    fixed = dict(fixed or {})
    allowed = _tunable_names(spec) - set(_RESERVED)
    bad = sorted((set(grid) | set(fixed)) - allowed)
    if bad:
        raise ValueError(f"{bad} cannot be varied or fixed for {spec.name}; valid names: {sorted(allowed)}.")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise ValueError(f"{both} are both varied and fixed; give each in one of vary / fixed.")
    if labels_key is not None and labels_key not in adata.obs:
        raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    import inspect

    params = inspect.signature(spec.func).parameters
    if "labels_key" in params:
        if labels_key is None and "labels_key" not in fixed and params["labels_key"].default is inspect.Parameter.empty:
            raise ValueError(f"Comparing runs of {spec.name} needs labels_key= (the obs column of the classes).")
        if labels_key is not None:
            fixed.setdefault("labels_key", labels_key)
    fixed.setdefault("seed", int(seed))
    if device is not None:
        fixed.setdefault("device", device)
    if copy:
        adata = copy_of(adata)
    labels = adata.obs[labels_key].astype(str).to_numpy() if labels_key is not None else None

    settings = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    rows, histories, embeddings = [], {}, {}
    for i, setting in enumerate(settings):
        label = _label(setting)
        logger.info(f"compare_runs [{i + 1}/{len(settings)}] {spec.name}: {label}")
        before = dict(adata.uns.items())
        t0 = time.perf_counter()
        with Scratch(adata) as scratch:
            result = spec.func(adata, **fixed, **setting, progress=False)
            seconds = time.perf_counter() - t0
            record = _record(before, adata)
            written = {k: np.asarray(v) for k, v in scratch.written("obsm").items()
                       if not isinstance(v, pd.DataFrame) and getattr(v, "ndim", 0) == 2}
        hist = record.get("history") or getattr(getattr(result, "history", None), "to_dict", dict)()
        train = [float(x) for x in hist.get("train_loss", [])]
        val = [np.nan if x is None else float(x) for x in hist.get("val_loss", [])]
        start = hist.get("start_val_loss")  # "epoch 0": kept when no epoch beat it
        candidates = val + ([float(start)] if start is not None else [])
        row = {"setting": label, **{k: _fmt(v) if isinstance(v, (list, tuple)) else v for k, v in setting.items()},
               "final_train_loss": train[-1] if train else np.nan,
               "final_val_loss": val[-1] if val else np.nan,
               "best_val_loss": float(np.nanmin(candidates)) if candidates and np.isfinite(candidates).any() else np.nan,
               "best_epoch": int(hist.get("best_epoch", 0) or 0), "epochs": len(train)}
        metrics = record.get("metrics") or getattr(result, "metrics", None) or {}
        for name in ("accuracy", "macro_f1"):
            if isinstance(metrics.get(name), (int, float)):
                row[name] = float(metrics[name])
        if len(written) == 1 and labels is not None and "accuracy" not in row:
            from ._compare import knn_accuracy

            row["knn_accuracy"] = knn_accuracy(next(iter(written.values())), labels, seed=int(seed))
        baseline = record.get("baseline")
        if isinstance(baseline, Mapping) and "baseline" in baseline:
            row["baseline"] = float(baseline["baseline"])
            row["baseline_method"] = str(baseline.get("method", ""))
            row["baseline_metric"] = str(baseline.get("metric", ""))
        row["seconds"] = round(seconds, 3)
        rows.append(row)
        histories[label] = {"train_loss": train, "val_loss": val}
        if keep_embeddings and len(written) == 1:
            obsm_key = next(iter(written))
            embeddings[f"{obsm_key}_{label}"] = next(iter(written.values()))
    for k, v in embeddings.items():
        adata.obsm[k] = v
    table = pd.DataFrame(rows).set_index("setting")
    adata.uns[key_added] = {
        "table": table,
        **sanitize_for_uns({"histories": histories, "step": spec.name, "vary": grid, "fixed": fixed,
                            "seed": int(seed), "labels_key": labels_key, "obsm_keys": list(embeddings)}),
    }
    best = table["best_val_loss"].idxmin() if table["best_val_loss"].notna().any() else None
    logger.info(f"compare_runs: {len(rows)} runs of {spec.name}; lowest validation loss: {best}")
    return adata if copy else None
