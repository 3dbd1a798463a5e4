"""The shared training panel, generated from :class:`scnapse.train.TrainConfig`.

One widget per dataclass field: ``Literal`` fields become drop-downs with exactly the config's
choices (``literal_choices``), booleans check boxes, integers spin boxes, rates and penalties a
text entry that reads and shows scientific notation (``1e-4``). ``momentum`` is visible only
for the optimizers that use it; ``device`` lists only the devices that exist here. The values
are checked by ``TrainConfig.from_kwargs`` itself, so the panel can never accept what the API
refuses (or the reverse).
"""

from __future__ import annotations

import dataclasses
import re
import typing

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, Select, SpinBox

from .._settings import available_devices
from ..train.config import MOMENTUM_OPTIMIZERS, TrainConfig, literal_choices

#: fields entered as text in scientific notation (they span orders of magnitude)
LOG_FIELDS = ("lr", "l1", "l2", "weight_decay")
#: GUI ranges of the bounded float fields (TrainConfig checks the same bounds)
FLOAT_RANGES = {"dropout": (0.0, 0.95, 0.05), "validation_fraction": (0.0, 0.9, 0.05),
                "input_noise": (0.0, 10.0, 0.05), "momentum": (0.0, 0.9999, 0.01)}
INT_RANGES = {"batch_size": (1, 1_000_000), "max_epochs": (0, 100_000), "early_stopping": (0, 100_000),
              "seed": (0, 2**31 - 1)}
LABELS = {"lr": "learning rate", "l1": "L1 penalty", "l2": "L2 penalty", "input_noise": "input noise",
          "max_epochs": "epochs (0 = auto)", "early_stopping": "early stopping (patience, 0 = off)",
          "validation_fraction": "validation fraction", "lr_schedule": "lr schedule",
          "batch_norm": "batch norm", "weight_decay": "weight decay", "batch_size": "batch size"}
AUTO = "auto"


def field_docs() -> dict[str, str]:
    """Each field's description from ``TrainConfig``'s numpy docstring (for tooltips)."""
    doc = TrainConfig.__doc__ or ""
    out, current, lines = {}, None, []
    for line in doc.split("----------", 1)[-1].splitlines():
        if line.startswith("    ") and not line.startswith("        ") and line.strip():
            if current:
                for name in current:
                    out[name] = " ".join(lines)
            current, lines = [n.strip() for n in line.split(",")], []
        elif current is not None and line.strip():
            lines.append(line.strip())
    if current:
        for name in current:
            out[name] = " ".join(lines)
    return out


def format_float(value: float) -> str:
    """``1e-4`` → ``"0.0001"``, ``1e-5`` → ``"1e-05"``: never rounded to a few decimals."""
    return f"{value:g}"


class ScientificEntry(LineEdit):
    """A text entry for a positive rate: accepts ``1e-4``, ``0.0001``, ``3e-3`` ..."""

    def __init__(self, value: float, name: str, label: str, tooltip: str = ""):
        super().__init__(value=format_float(value), name=name, label=label, tooltip=tooltip)

    @property
    def number(self) -> float:
        text = str(self.value).strip()
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            raise ValueError(f"{self.label}: {text!r} is not a number; write e.g. 1e-4 or 0.001.")
        return float(text)

    @number.setter
    def number(self, value: float) -> None:
        self.value = format_float(value)


class TrainOptions(Container):
    """Training choices for one step, built from the fields of ``TrainConfig``.

    Parameters
    ----------
    defaults
        Initial values differing from ``TrainConfig()``'s (e.g. a step's natural epochs).
    costs
        The costs this step accepts (default: all of ``TrainConfig``'s); ``None`` ("auto") first.
    exclude
        Fields not shown (e.g. ``augment`` for non-image models).
    """

    def __init__(self, *, defaults: dict | None = None, costs: typing.Sequence[str] | None = None,
                 exclude: typing.Sequence[str] = ("augment",)):
        super().__init__(labels=True)
        base = TrainConfig().to_dict()
        base.update(defaults or {})
        docs = field_docs()
        hints = typing.get_type_hints(TrainConfig)
        self._fields: dict[str, object] = {}
        for f in dataclasses.fields(TrainConfig):
            if f.name in exclude:
                continue
            w = self._make(f.name, hints[f.name], base[f.name], costs, docs.get(f.name, ""))
            self._fields[f.name] = w
            self.append(w)
        if "optimizer" in self._fields and "momentum" in self._fields:
            self._fields["optimizer"].changed.connect(self._update_visibility)
            self._update_visibility()

    # -- building ---------------------------------------------------------------------------------
    def _make(self, name, hint, value, costs, tooltip):
        label = LABELS.get(name, name.replace("_", " "))
        if name == "device":
            choices = [AUTO, *available_devices()]
            return ComboBox(name=name, label=label, choices=choices,
                            value=value if value in choices else AUTO, tooltip=tooltip)
        if name == "augment":
            return Select(name=name, label=label, choices=list(literal_choices_augment()), value=list(value or ()),
                          tooltip=tooltip)
        choices = literal_choices(name)
        if choices is not None:
            choices = list(choices)
            if name == "cost" and costs is not None:
                choices = [c for c in choices if c in costs]
            optional = type(None) in typing.get_args(hint)
            items = ([(f"{AUTO} (the step's natural cost)" if name == "cost" else AUTO, None)] if optional else [])
            items += [(c, c) for c in choices]
            return ComboBox(name=name, label=label, choices=items, value=value if value in choices else None,
                            tooltip=tooltip)
        if hint is bool:
            return CheckBox(name=name, label=label, value=bool(value), tooltip=tooltip)
        if name in LOG_FIELDS:
            return ScientificEntry(value, name=name, label=label, tooltip=tooltip + " (e.g. 1e-4)")
        if name in FLOAT_RANGES:
            lo, hi, step = FLOAT_RANGES[name]
            return FloatSpinBox(name=name, label=label, value=float(value), min=lo, max=hi, step=step,
                                tooltip=tooltip)
        if name in INT_RANGES:
            lo, hi = INT_RANGES[name]
            v = 0 if value is None else int(value)
            if name == "seed" and value is None:
                from .._settings import settings

                v = int(settings.seed)
            return SpinBox(name=name, label=label, value=v, min=lo, max=hi, tooltip=tooltip)
        return LineEdit(name=name, label=label, value=str(value), tooltip=tooltip)

    def _update_visibility(self, *_):
        self._fields["momentum"].visible = self._fields["optimizer"].value in MOMENTUM_OPTIMIZERS

    # -- reading / writing --------------------------------------------------------------------------
    def widget(self, name: str):
        return self._fields[name]

    def values(self) -> dict:
        """The chosen options as ``TrainConfig`` keyword arguments, checked by ``TrainConfig``.

        ``momentum`` is left out for optimizers that ignore it; ``max_epochs=0`` means ``None``
        (the step picks). Raises ``ValueError`` with the config's message on a bad value.
        """
        out = {}
        for name, w in self._fields.items():
            if isinstance(w, ScientificEntry):
                out[name] = w.number
            elif name == "max_epochs":
                out[name] = int(w.value) or None
            elif name == "augment":
                out[name] = list(w.value)
            else:
                out[name] = w.value
        if "momentum" in out and out.get("optimizer") not in MOMENTUM_OPTIMIZERS:
            out.pop("momentum")
        TrainConfig.from_kwargs(**out)  # the API's own checks and messages
        return out

    def set_values(self, **values) -> None:
        for name, value in values.items():
            w = self._fields[name]
            if isinstance(w, ScientificEntry):
                w.number = value
            elif name == "max_epochs":
                w.value = value or 0
            else:
                w.value = value


def literal_choices_augment() -> tuple[str, ...]:
    from ..train.config import AUGMENTATIONS

    return AUGMENTATIONS
