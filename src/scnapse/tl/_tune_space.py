"""Search spaces of :func:`scnapse.tl.tune`: parsing, Optuna suggestions and grids."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

KINDS = ("log_uniform", "uniform", "int", "choice")


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
        if kind not in KINDS:
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


def _by_index(values: list) -> bool:
    """Optuna stores choices as str/int/float/bool; others (lists: hidden sizes) go by their index."""
    return not all(isinstance(x, (str, int, float, bool)) or x is None for x in values)


def grid_search_space(space: dict, n_trials: int) -> dict[str, list]:
    """The grid of :func:`_grid` as Optuna's ``GridSampler`` takes it (lists by their index)."""
    return {k: (list(range(len(v))) if _by_index(v) else v) for k, v in _grid(space, n_trials).items()}


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, (kind, v) in space.items():
        if kind == "log_uniform":
            params[name] = trial.suggest_float(name, v[0], v[1], log=True)
        elif kind == "uniform":
            params[name] = trial.suggest_float(name, v[0], v[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(v[0]), int(v[1]))
        elif _by_index(v):
            params[name] = v[trial.suggest_categorical(name, list(range(len(v))))]
        else:
            params[name] = trial.suggest_categorical(name, v)
    return params


def _decode(space: dict, name: str, value):
    """A trial's stored value as the step takes it (an index back to its list)."""
    kind, values = space.get(name, ("", []))
    if kind == "choice" and _by_index(values) and isinstance(value, int):
        return values[value]
    return value
