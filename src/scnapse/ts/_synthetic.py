"""Synthetic sequences with known dynamics, for tests, benchmarks and demos."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._sequences import from_array


def simulate_oscillations(
    n: int = 400, *, frequencies: tuple[float, float] = (0.08, 0.12), min_length: int = 20,
    max_length: int = 50, noise: float = 0.3, seed: int = 0,
) -> AnnData:
    """Two classes of noisy oscillation that differ only in frequency (cycles per step).

    Amplitude (0.5–2), phase, offset and length are random per sequence, so neither the level, the
    spread nor the length tells the classes apart. Features: the signal and a second channel
    ``size`` that oscillates in antiphase with half the amplitude.

    Parameters
    ----------
    n
        Number of sequences (half of each class).
    frequencies
        The two classes' frequencies.
    min_length, max_length
        Range of the sequences' lengths.
    noise
        Standard deviation of the added Gaussian noise.
    seed
        Seed of the simulation.

    Returns
    -------
    AnnData
        A sequence AnnData with ``obs["label"]`` ``"slow"`` / ``"fast"``.
    """
    rng = np.random.default_rng(seed)
    T = max_length
    y = rng.integers(0, 2, n)
    lengths = rng.integers(min_length, max_length + 1, n)
    t = np.arange(T)[None, :]
    f = np.asarray(frequencies)[y][:, None] * rng.uniform(0.95, 1.05, (n, 1))
    amp = rng.uniform(0.5, 2.0, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    offset = rng.normal(0, 1, (n, 1))
    wave = np.sin(2 * np.pi * f * t + phase)
    sig = offset + amp * wave + noise * rng.normal(size=(n, T))
    size = 5 - 0.5 * amp * wave + noise * rng.normal(size=(n, T))
    x = np.stack([sig, size], axis=2)
    x[t.repeat(n, 0) >= lengths[:, None]] = np.nan
    obs = pd.DataFrame({"label": pd.Categorical(np.array(["slow", "fast"])[y])}, index=[f"s{i}" for i in range(n)])
    return from_array(x, lengths=lengths, features=["signal", "size"], obs=obs)


def simulate_damped(
    n: int = 300, *, length: int = 40, min_length: int | None = None, noise: float = 0.05, seed: int = 0,
) -> AnnData:
    """Damped oscillations ``A e^{-γt} cos(ωt + φ) + c`` with ω, γ, A, φ, c random per sequence.

    A forecaster must infer each sequence's own frequency and damping from its history.

    Parameters
    ----------
    n
        Number of sequences.
    length
        Longest sequence (steps).
    min_length
        Shortest sequence; ``None``: ``length // 2``.
    noise
        Standard deviation of the added Gaussian noise.
    seed
        Seed of the simulation.

    Returns
    -------
    AnnData
        A sequence AnnData (see :func:`from_array`) with one feature ``value``.
    """
    rng = np.random.default_rng(seed)
    min_length = length // 2 if min_length is None else min_length
    lengths = rng.integers(min_length, length + 1, n)
    t = np.arange(length)[None, :]
    omega = rng.uniform(0.25, 0.6, (n, 1))
    gamma = rng.uniform(0.0, 0.06, (n, 1))
    amp = rng.uniform(0.5, 2.0, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    c = rng.normal(0, 0.5, (n, 1))
    x = c + amp * np.exp(-gamma * t) * np.cos(omega * t + phase) + noise * rng.normal(size=(n, length))
    x = x[:, :, None]
    x[t.repeat(n, 0) >= lengths[:, None]] = np.nan
    obs = pd.DataFrame({"omega": omega[:, 0], "gamma": gamma[:, 0]}, index=[f"d{i}" for i in range(n)])
    return from_array(x, lengths=lengths, features=["value"], obs=obs)
