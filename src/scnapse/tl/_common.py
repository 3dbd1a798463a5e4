"""What the training steps share: run options taken apart from training choices, architecture
defaults read from the model classes, and the one vocabulary for class imbalance."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Literal

from ..train import RunOptions

ClassWeight = Literal["balanced", "sampling"]


def model_default(cls, name: str):
    """The default of ``name`` in ``cls(...)``: an architecture default is written once, in the
    model class, and the steps show the same value in their signatures."""
    return inspect.signature(cls).parameters[name].default


def train_model(cls, adata, *, run: RunOptions | None, options: dict, fit: dict, **model_args):
    """``cls(**model_args, **training choices).fit(adata, **fit, run=...)``.

    ``options`` are a step's ``**options``: the run options among them (``progress``,
    ``checkpoint_dir``, ... see :class:`~scnapse.train.RunOptions`) update ``run``; the rest are
    :class:`~scnapse.train.TrainConfig` fields for the model.
    """
    options = dict(options)
    run = RunOptions.from_kwargs(run, options)
    model = cls(**model_args, **options)
    return model.fit(adata, **fit, run=run)


def layer_widths(hidden, *, step: str) -> tuple[int, ...]:
    """``hidden`` as a tuple of widths. A single integer (the recurrent steps' old form) is still
    read, as one layer of that width, with a FutureWarning."""
    if isinstance(hidden, bool):
        raise ValueError(f"hidden={hidden!r} must be a sequence of layer widths, e.g. (64,).")
    if isinstance(hidden, int):
        warnings.warn(
            f"{step}(hidden={hidden}) is now hidden=({hidden},): a sequence of widths, as in every "
            "model family. A single integer will not be accepted in a future version.",
            FutureWarning,
            stacklevel=4,  # the caller of the step
        )
        return (hidden,)
    if not isinstance(hidden, Sequence) or isinstance(hidden, str):
        raise ValueError(f"hidden={hidden!r} must be a sequence of layer widths, e.g. (64,).")
    return tuple(hidden)


def class_weight_option(class_weight, options: dict, *, default) -> str | None:
    """``class_weight``, or the old ``class_balance=`` keyword popped from ``options`` and
    translated (with a FutureWarning); the vocabulary is the models' (:mod:`scnapse.models._labels`)."""
    from ..models._labels import check_class_weight

    if "class_balance" in options:
        if class_weight != default:
            raise TypeError("Give class_weight= only (class_balance= is its old name).")
        return check_class_weight(None, options.pop("class_balance"))
    return check_class_weight(class_weight)
