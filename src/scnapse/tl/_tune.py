from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata import sanitize_for_uns
from .._settings import logger
from ..train.config import TrainConfig

#: what each tunable step can be scored on; the first is the default (the label-based metric is the
#: default when ``labels_key`` is given to the autoencoder)
METRICS = {
    "autoencoder": ("val_loss", "knn_accuracy", "leiden_ari"),
    "classifier": ("macro_f1", "accuracy", "val_loss"),
}
_STEP_ALIASES = {
    "autoencoder": "autoencoder", "scnapse.tl.autoencoder": "autoencoder",
    "classifier": "classifier", "train_classifier": "classifier", "scnapse.tl.train_classifier": "classifier",
}
SAMPLERS = ("tpe", "random", "grid")


def _parse_space(space: Mapping) -> dict[str, tuple[str, list]]:
    """``{"lr": {"log_uniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0, .5]}, "batch_size":
    {"int": [32, 256]}, "optimizer": {"choice": [...]}}``; a plain list means a choice."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("space must be a non-empty mapping of parameter → range, e.g. "
                         "{'lr': {'log_uniform': [1e-4, 1e-2]}, 'optimizer': ['adam', 'sgd']}.")
    out = {}
    for name, spec in space.items():
        if isinstance(spec, (list, tuple)):
            spec = {"choice": list(spec)}
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ValueError(f"space[{name!r}] = {spec!r}: give one of log_uniform / uniform / int / choice.")
        kind, values = next(iter(spec.items()))
        if kind not in ("log_uniform", "uniform", "int", "choice"):
            raise ValueError(f"space[{name!r}]: unknown range kind {kind!r}; use log_uniform, uniform, int or choice.")
        values = list(values)
        if kind != "choice":
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"space[{name!r}]: {kind} needs [low, high] with low < high, not {values}.")
            if kind == "log_uniform" and values[0] <= 0:
                raise ValueError(f"space[{name!r}]: log_uniform needs a positive lower bound.")
        elif not values:
            raise ValueError(f"space[{name!r}]: choice needs at least one value.")
        out[name] = (kind, [float(v) if kind in ("log_uniform", "uniform") else v for v in values])
    return out


def _grid(space: dict, n_trials: int) -> dict[str, list]:
    """A grid of about ``n_trials`` points: k values per continuous axis (log-spaced for rates)."""
    n_cont = sum(kind != "choice" for kind, _ in space.values())
    n_choice = int(np.prod([len(v) for kind, v in space.values() if kind == "choice"] or [1]))
    k = max(1, int(math.floor((n_trials / n_choice) ** (1 / n_cont)))) if n_cont else 1
    grid = {}
    for name, (kind, v) in space.items():
        if kind == "choice":
            grid[name] = list(v)
        elif kind == "log_uniform":
            grid[name] = list(np.geomspace(v[0], v[1], k)) if k > 1 else [float(np.sqrt(v[0] * v[1]))]
        elif kind == "uniform":
            grid[name] = list(np.linspace(v[0], v[1], k)) if k > 1 else [(v[0] + v[1]) / 2]
        else:
            grid[name] = sorted({int(round(x)) for x in np.linspace(v[0], v[1], k)}) if k > 1 else [int((v[0] + v[1]) // 2)]
    return grid


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, (kind, v) in space.items():
        if kind == "log_uniform":
            params[name] = trial.suggest_float(name, v[0], v[1], log=True)
        elif kind == "uniform":
            params[name] = trial.suggest_float(name, v[0], v[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(v[0]), int(v[1]))
        else:
            # optuna stores choices as str/int/float/bool; lists (hidden sizes) go through their index
            if all(isinstance(x, (str, int, float, bool)) or x is None for x in v):
                params[name] = trial.suggest_categorical(name, v)
            else:
                i = trial.suggest_categorical(name, list(range(len(v))))
                params[name] = v[i]
    return params


def tune(
    adata: AnnData,
    *,
    space: Mapping,
    step: str = "autoencoder",
    n_trials: int = 20,
    sampler: str = "tpe",
    metric: str | None = None,
    labels_key: str | None = None,
    fixed: Mapping | None = None,
    prune: bool = True,
    seed: int = 0,
    key_added: str = "tune",
    copy: bool = False,
) -> AnnData | None:
    """Search hyperparameters of a scnapse step with Optuna (TPE or random search) or a grid.

    Parameters
    ----------
    adata
        The data the step trains on (already preprocessed as the step expects).
    space
        Parameter → range: ``{"log_uniform": [lo, hi]}`` (rates), ``{"uniform": [lo, hi]}``,
        ``{"int": [lo, hi]}``, ``{"choice": [...]}`` or a plain list (a choice; lists of lists work
        for ``hidden``). Any ``TrainConfig`` field and the step's own options (``hidden``,
        ``n_latent``…) can be searched.
    step
        ``"autoencoder"`` (``sn.tl.autoencoder``) or ``"classifier"`` (``sn.tl.train_classifier``).
    n_trials
        Number of trainings.
    sampler
        ``"tpe"`` (Optuna's Tree-structured Parzen Estimator), ``"random"``, or ``"grid"`` (about
        ``n_trials`` evenly spread points).
    metric
        What to optimise. Autoencoder: ``"val_loss"`` (validation reconstruction loss; default
        without labels), ``"knn_accuracy"`` (15-NN label accuracy, default with ``labels_key``) or
        ``"leiden_ari"``. Classifier: ``"macro_f1"`` (validation, default), ``"accuracy"``, ``"val_loss"``.
    labels_key
        ``obs`` column of labels: the classifier's labels, or the autoencoder's label-based score.
    fixed
        Options passed unchanged to every trial (e.g. ``{"max_epochs": 50}``).
    prune
        Stop unpromising trials early (Optuna's median pruner on the per-epoch validation loss).
    seed
        Seeds the sampler and every trial's training: a tuning run is itself reproducible.
    key_added
        ``uns[key_added]`` gets ``trials`` (a table), ``best_params``, ``best_value``, ``metric``.
    copy
        Return a copy instead of writing into ``adata``.
    """
    import optuna

    from ..models.classifier import CellClassifier
    from ..models.autoencoder import Autoencoder
    from ._compare import knn_accuracy, leiden_ari

    kind = _STEP_ALIASES.get(step)
    if kind is None:
        raise ValueError(f"step={step!r} cannot be tuned; choose 'autoencoder' or 'classifier'.")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; choose one of {list(SAMPLERS)}.")
    if kind == "classifier" and labels_key is None:
        raise ValueError("Tuning the classifier needs labels_key= (the obs column with the cell types).")
    if labels_key is not None and labels_key not in adata.obs:
        raise KeyError(f"labels_key={labels_key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}.")
    if metric is None:
        metric = "knn_accuracy" if (kind == "autoencoder" and labels_key) else METRICS[kind][0]
    if metric not in METRICS[kind]:
        raise ValueError(f"metric={metric!r} does not fit the {kind}; choose one of {list(METRICS[kind])}.")
    if metric in ("knn_accuracy", "leiden_ari") and labels_key is None:
        raise ValueError(f"metric={metric!r} needs labels_key=.")
    n_trials = int(n_trials)
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1.")
    parsed = _parse_space(space)
    fixed = dict(fixed or {})
    model_cls = Autoencoder if kind == "autoencoder" else CellClassifier
    import inspect

    allowed = set(TrainConfig.field_names()) | {
        n for n in inspect.signature(model_cls.__init__).parameters if n not in ("self", "train_options")
    }
    bad = sorted((set(parsed) | set(fixed)) - allowed)
    if bad:
        raise ValueError(f"{bad} cannot be tuned for the {kind}; valid names: {sorted(allowed)}.")
    if "cost" in parsed and metric == "val_loss":
        raise ValueError("Validation losses of different costs are not comparable; tune 'cost' with a "
                         "label-based metric (knn_accuracy / leiden_ari) or leave it out of the space.")

    maximize = metric != "val_loss"
    labels = adata.obs[labels_key].astype(str).to_numpy() if labels_key else None

    def objective(trial):
        params = {**fixed, **_suggest(trial, parsed)}
        params.setdefault("seed", seed)

        def report(r):
            if not prune or r.val_loss is None:
                return None
            trial.report(-r.val_loss if maximize else r.val_loss, r.epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", r.epoch)
                return False
            return None

        model = model_cls(**params)
        if kind == "autoencoder":
            model.fit(adata, progress=False, callback=report)
        else:
            model.fit(adata, labels_key=labels_key, progress=False, callback=report)
        if trial.user_attrs.get("pruned_at_epoch"):
            raise optuna.TrialPruned()
        val = [v for v in model.history.val_loss if v is not None and np.isfinite(v)]
        if metric == "val_loss":
            if not val:
                raise ValueError("metric='val_loss' needs validation cells; keep validation_fraction > 0.")
            return float(min(val))
        if kind == "classifier":
            value = model.metrics.get(metric)
            if value is None:
                raise ValueError(f"The classifier has no validation {metric} (validation_fraction=0?).")
            return float(value)
        emb = model.transform(adata)
        if metric == "knn_accuracy":
            return knn_accuracy(emb, labels, seed=seed)
        return leiden_ari(emb, labels, seed=seed)[0]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "tpe":
        smp = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials))
    elif sampler == "random":
        smp = optuna.samplers.RandomSampler(seed=seed)
    else:
        grid = _grid(parsed, n_trials)
        # lists in a choice go through their index, as in _suggest
        grid = {k: (list(range(len(v))) if any(isinstance(x, (list, tuple)) for x in v) else v)
                for k, v in grid.items()}
        smp = optuna.samplers.GridSampler(grid, seed=seed)
        n_trials = min(n_trials, int(np.prod([len(v) for v in grid.values()])))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5) if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=smp, pruner=pruner)
    study.optimize(objective, n_trials=n_trials, catch=())

    rows = []
    best_so_far = -np.inf if maximize else np.inf
    for t in study.trials:
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else np.nan
        if np.isfinite(value):
            best_so_far = max(best_so_far, value) if maximize else min(best_so_far, value)
        params = {k: _decode(parsed, k, v) for k, v in t.params.items()}
        rows.append({"trial": t.number, "state": t.state.name.lower(), metric: value,
                     "best_so_far": best_so_far if np.isfinite(best_so_far) else np.nan,
                     **{k: str(v) if isinstance(v, (list, tuple)) else v for k, v in params.items()}})
    table = pd.DataFrame(rows).set_index("trial")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError("No trial completed; widen the search space or turn pruning off (prune=False).")
    best = study.best_trial
    best_params = {**fixed, **{k: _decode(parsed, k, v) for k, v in best.params.items()}}
    if copy:
        adata = adata.copy()
    adata.uns[key_added] = {
        "trials": table,
        **sanitize_for_uns({"best_params": best_params, "best_value": best.value, "metric": metric,
                            "maximize": maximize, "step": kind, "sampler": sampler, "seed": seed,
                            "n_trials": len(study.trials), "n_pruned": sum(t.state.name == "PRUNED" for t in study.trials),
                            "space": {k: {kd: v} for k, (kd, v) in parsed.items()}}),
    }
    logger.info(f"tune ({sampler}, {len(study.trials)} trials): best {metric} = {best.value:.4g} with {best_params}")
    return adata if copy else None


def _decode(space: dict, name: str, value):
    kind, values = space.get(name, ("", []))
    if kind == "choice" and any(isinstance(x, (list, tuple)) for x in values) and isinstance(value, int):
        return values[value]
    return value
