"""``TrainConfig``: the one description of the training choices.

Every step takes these fields as keyword arguments; the napari panels are generated from the same
dataclass (choices from its ``Literal`` types), so the API and the GUI cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from .._settings import settings
from ..nn.activations import ACTIVATIONS, Activation

Cost = Literal["mse", "bce", "cross_entropy", "kl", "hellinger", "poisson", "nb"]
Optimizer = Literal["sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw"]
Schedule = Literal["none", "plateau"]
Augmentation = Literal["flip", "rot90", "intensity", "noise"]

COSTS: tuple[str, ...] = get_args(Cost)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
#: optimizers that read ``momentum``
MOMENTUM_OPTIMIZERS = ("momentum", "nesterov", "rmsprop")


@dataclass(frozen=True)
class Bound:
    """The range :class:`TrainConfig` accepts for one number, and the step a GUI moves it by.

    ``min`` / ``max`` are inclusive (``None``: unbounded) unless ``open_min`` (then ``> min``).
    """

    min: float | None = None
    max: float | None = None
    step: float | None = None
    open_min: bool = False


#: the bounds of TrainConfig's numeric fields: checked by ``TrainConfig`` and used by the panels
BOUNDS: dict[str, Bound] = {
    "dropout": Bound(0, 0.95, 0.05),
    "input_noise": Bound(0, None, 0.05),
    "l1": Bound(0),
    "l2": Bound(0),
    "lr": Bound(0, open_min=True),
    "momentum": Bound(0, 0.9999, 0.01),
    "weight_decay": Bound(0),
    "batch_size": Bound(1, step=1),
    "max_epochs": Bound(1, step=1),
    "early_stopping": Bound(0, step=1),
    "validation_fraction": Bound(0, 0.9, 0.05),
    "seed": Bound(0, step=1),
}


class OptionError(TypeError, ValueError):
    """An unknown or invalid option. Both a ``TypeError`` (as Python's own unknown keyword) and a
    ``ValueError`` (as the rest of scnapse's input checks)."""


@dataclass
class TrainConfig:
    """How a model is trained. Every field is a keyword argument of every training step.

    Parameters
    ----------
    cost
        The cost function: ``mse``, ``bce`` (binary cross-entropy), ``cross_entropy`` (softmax,
        for classifiers), ``kl`` (Kullback–Leibler), ``hellinger``, ``poisson`` or ``nb``
        (negative binomial; both for raw counts). See :mod:`scnapse.nn.losses` for the formulas.
        ``None`` lets the step choose its natural cost.
    activation
        Hidden-layer activation: ``relu``, ``sigmoid``, ``tanh``, ``softplus``, ``leaky_relu``,
        ``elu`` or ``gelu``.
    dropout
        Dropout probability on hidden layers (0 = off).
    input_noise
        Standard deviation of Gaussian noise added to the (standardised) input while training: a
        denoising autoencoder. 0 = off.
    l1, l2
        Weights of the L1 (Σ|w|) and L2 (Σw²) penalties on the weight matrices, added to the cost.
    batch_norm
        Batch normalisation after each hidden linear layer.
    optimizer
        ``sgd``, ``momentum`` (SGD with momentum), ``nesterov``, ``rmsprop``, ``adagrad``, ``adam``
        or ``adamw``.
    lr
        Learning rate.
    momentum
        Momentum, for ``momentum``, ``nesterov`` and ``rmsprop``.
    weight_decay
        The optimizer's own weight decay (decoupled for ``adamw``).
    batch_size
        Cells per mini-batch.
    max_epochs
        Upper bound on passes over the data; ``None`` picks one from the number of cells.
    early_stopping
        Patience: stop after this many epochs without improvement of the validation loss and
        restore the best weights. 0 = off (the last weights are kept).
    validation_fraction
        Fraction of cells held out for validation (0 = none: early stopping then watches the
        training loss).
    lr_schedule
        ``none`` or ``plateau`` (halve the learning rate when the validation loss stalls).
    augment
        Data augmentations for image models: ``flip``, ``rot90``, ``intensity``, ``noise``.
    seed
        Seed of initialisation, splits, shuffling, dropout and noise. ``None``: ``scnapse.settings.seed``.
    device
        ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    deterministic
        Ask PyTorch for deterministic kernels (slower on GPUs; the CPU is deterministic anyway).
    """

    cost: Cost | None = None
    activation: Activation = "relu"
    dropout: float = 0.1
    input_noise: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    batch_norm: bool = False
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int | None = None
    early_stopping: int = 20
    validation_fraction: float = 0.1
    lr_schedule: Schedule = "none"
    augment: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    device: str = "auto"
    deterministic: bool = False

    def __post_init__(self):
        self._check()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, defaults: dict | None = None, /, **kwargs) -> TrainConfig:
        """Build a config from keyword arguments, refusing unknown names with the valid ones."""
        unknown = sorted(set(kwargs) - set(cls.field_names()))
        if unknown:
            raise OptionError(
                f"Unknown option(s) {unknown}. Valid training options are: {list(cls.field_names())}."
            )
        merged = {**(defaults or {}), **kwargs}
        return cls(**merged)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        return d

    @property
    def resolved_seed(self) -> int:
        return int(settings.seed if self.seed is None else self.seed)

    # -- validation -----------------------------------------------------------------------------
    def _check(self) -> None:
        def choice(name, value, valid, allow_none=False):
            if value is None and allow_none:
                return
            if value not in valid:
                raise OptionError(f"{name}={value!r} is not valid; choose one of {list(valid)}.")

        def number(name, lo=None, hi=None, lo_open=False, integer=False, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            kind = "an integer" if integer else "a number"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integer and not float(value).is_integer()
            ):
                raise OptionError(f"{name}={value!r} must be {kind}.")
            if value != value:  # NaN
                raise OptionError(f"{name} must not be NaN.")
            if value in (float("inf"), float("-inf")):
                raise OptionError(f"{name}={value!r} must be a finite number.")
            if lo is not None and (value < lo or (lo_open and value == lo)):
                raise OptionError(f"{name}={value!r} must be {'>' if lo_open else '>='} {lo}.")
            if hi is not None and value > hi:
                raise OptionError(f"{name}={value!r} must be <= {hi}.")
            if integer:
                object.__setattr__(self, name, int(value))

        choice("cost", self.cost, COSTS, allow_none=True)
        choice("activation", self.activation, ACTIVATIONS)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("lr_schedule", self.lr_schedule, SCHEDULES)
        for name, b in BOUNDS.items():
            kinds = _field_kinds(name)
            number(name, b.min, b.max, lo_open=b.open_min, integer=int in kinds, allow_none=type(None) in kinds)
        if isinstance(self.augment, str):
            self.augment = (self.augment,)
        self.augment = tuple(self.augment or ())
        for a in self.augment:
            choice("augment", a, AUGMENTATIONS)
        if not isinstance(self.batch_norm, bool):
            raise OptionError(f"batch_norm={self.batch_norm!r} must be True or False.")
        if not isinstance(self.device, str):
            self.device = str(self.device)


@functools.cache
def _field_kinds(name: str) -> tuple:
    """The types a ``TrainConfig`` field's annotation allows (``int | None`` → ``(int, NoneType)``)."""
    hint = typing.get_type_hints(TrainConfig)[name]
    return get_args(hint) or (hint,)


def literal_choices(name: str) -> tuple | None:
    """The allowed values of a ``TrainConfig`` field typed as a ``Literal`` (for the GUI)."""
    hints = typing.get_type_hints(TrainConfig)
    tp = hints[name]
    for arg in (tp, *get_args(tp)):
        if typing.get_origin(arg) is Literal:
            return get_args(arg)
    return None
