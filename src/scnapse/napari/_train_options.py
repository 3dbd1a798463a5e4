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
import inspect
import re
import typing

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, Select, SpinBox

from .._settings import available_cpus, available_devices, resolve_threads
from ..train.config import AUGMENTATIONS, BOUNDS, MOMENTUM_OPTIMIZERS, Bound, TrainConfig, literal_choices

#: fields entered as text in scientific notation (they span orders of magnitude)
LOG_FIELDS = ("lr", "l1", "l2", "weight_decay")
#: largest value a spin box offers where TrainConfig sets no upper bound (Qt's spin boxes need one)
INT_MAX, FLOAT_MAX = 2**31 - 1, 1e6
LABELS = {"lr": "learning rate", "l1": "L1 penalty", "l2": "L2 penalty", "input_noise": "input noise",
          "max_epochs": "epochs (0 = auto)", "early_stopping": "early stopping (0 = off)",
          "validation_fraction": "validation fraction", "lr_schedule": "lr schedule",
          "batch_norm": "batch norm", "weight_decay": "weight decay", "batch_size": "batch size"}
AUTO = "auto"
#: the training options by topic: (name, title, fields shown, fields folded away until asked for);
#: a field of no topic goes to the last one
TOPICS = (
    ("cost", "Cost", ("cost",), ()),
    ("architecture", "Architecture and activation", ("activation",), ("batch_norm",)),
    ("regularization", "Regularization", ("dropout", "l2", "early_stopping"),
     ("augment", "l1", "input_noise", "weight_decay", "validation_fraction")),
    ("optimizer", "Optimizer", ("optimizer", "lr", "max_epochs", "batch_size"), ("momentum", "lr_schedule")),
    ("running", "Running", (), ("threads", "seed", "device", "deterministic")),
)
#: options of the run (RunOptions), not of the model: shown with the training options, not checked by TrainConfig
RUN_FIELDS = ("threads",)


def param_docs(doc: str) -> dict[str, str]:
    """Each parameter's description from a numpy docstring's ``Parameters`` section (for tooltips);
    a heading ``a, b`` describes both names."""
    text = inspect.cleandoc(doc)
    if "Parameters\n----------" not in text:
        return {}
    section = text.split("Parameters\n----------", 1)[1]
    section = re.split(r"\n\w[\w ]*\n-{3,}", section, maxsplit=1)[0]  # up to the next section
    out, names = {}, []
    for line in section.splitlines():
        if line.strip() and not line[0].isspace():  # a heading: "name" or "name : type"
            names = [n.strip().lstrip("*") for n in line.split(":", 1)[0].split(",")]
            for name in names:
                out[name] = ""
        elif line.strip():
            for name in names:
                out[name] = (out[name] + " " + line.strip()).strip()
    return out


def field_docs() -> dict[str, str]:
    """Each ``TrainConfig`` field's description from its numpy docstring (for tooltips)."""
    return param_docs(TrainConfig.__doc__ or "")


def format_float(value: float) -> str:
    """``1e-4`` → ``"0.0001"``, ``1e-5`` → ``"1e-05"``: never rounded to a few decimals."""
    return f"{value:g}"


class ScientificEntry(LineEdit):
    """A text entry for a positive rate: accepts ``1e-4``, ``0.0001``, ``3e-3`` ...

    ``bound`` (a :class:`~scnapse.train.config.Bound`) is the range it accepts: a number out of it
    is refused by :attr:`number` with the range.
    """

    def __init__(self, value: float, name: str, label: str, tooltip: str = "", bound: Bound | None = None):
        super().__init__(value=format_float(value), name=name, label=label, tooltip=tooltip)
        self.bound = bound or Bound()

    @property
    def min(self):
        return self.bound.min

    @property
    def max(self):
        return self.bound.max

    @property
    def number(self) -> float:
        text = str(self.value).strip()
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            raise ValueError(f"{self.label}: {text!r} is not a number; write e.g. 1e-4 or 0.001.")
        value, b = float(text), self.bound
        if b.min is not None and (value < b.min or (b.open_min and value == b.min)):
            raise ValueError(f"{self.label} ({self.name}): {text} must be {'>' if b.open_min else '>='} {b.min:g}.")
        if b.max is not None and value > b.max:
            raise ValueError(f"{self.label} ({self.name}): {text} must be <= {b.max:g}.")
        return value

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
    workload
        The step's kind of training (``"recurrent"``: sequence models), for the default threads
        (the count the step itself would use).
    """

    def __init__(self, *, defaults: dict | None = None, costs: typing.Sequence[str] | None = None,
                 exclude: typing.Sequence[str] = ("augment",), workload: str | None = None):
        super().__init__(labels=False)
        base = TrainConfig().to_dict()
        base.update(defaults or {})
        docs = field_docs()
        hints = typing.get_type_hints(TrainConfig)
        self._fields: dict[str, object] = {}
        for f in dataclasses.fields(TrainConfig):
            if f.name in exclude:
                continue
            self._fields[f.name] = self._make(f.name, hints[f.name], base[f.name], costs, docs.get(f.name, ""))
        self._fields["threads"] = SpinBox(
            name="threads", label="threads", value=resolve_threads(None, workload), min=1, max=max(256, available_cpus()),
            tooltip="CPU threads the training uses (default: what the package is set to use).")
        self.margins = (0, 0, 0, 0)
        self.native.layout().setSpacing(2)
        self._group(self._fields)
        if "optimizer" in self._fields and "momentum" in self._fields:
            self._fields["optimizer"].changed.connect(self._update_visibility)
            self._update_visibility()

    def _group(self, fields: dict) -> None:
        """Lay the fields out by topic (:data:`TOPICS`): a heading, the usual fields, and a button that
        unfolds the rarely changed ones."""
        placed = {n for _, _, shown, folded in TOPICS for n in (*shown, *folded)}
        stray = tuple(n for n in fields if n not in placed)
        #: topic → (its usual fields, its folded fields, the unfold button or None)
        self.groups: dict[str, tuple[Container, Container, PushButton | None]] = {}
        for i, (topic, title, shown, folded) in enumerate(TOPICS):
            if i == len(TOPICS) - 1:
                folded = (*folded, *stray)
            main = [fields[n] for n in shown if n in fields]
            more = [fields[n] for n in folded if n in fields]
            if not main and not more:
                continue
            main_box = Container(name=f"{topic}_fields", widgets=main, labels=True)
            more_box = Container(name=f"{topic}_more", widgets=more, labels=True)
            button = None
            if more:  # the heading is the button that unfolds the rest
                button = PushButton(name=f"more_{topic}", text=self._fold_text(title, more, False))
                button.native.setFlat(True)
                button.native.setStyleSheet("text-align: left; font-weight: bold; padding: 1px;")
                button.changed.connect(lambda *_, t=topic: self.unfold(t, not self.is_unfolded(t)))
                self.append(button)
            else:
                self.append(Label(name=f"{topic}_topic", value=f"<b>{title}</b>"))
            for box in (main_box, more_box):
                box.margins = (6, 0, 0, 0)
                box.native.layout().setSpacing(2)
            if main:
                self.append(main_box)
            if more:
                self.append(more_box)
                more_box.visible = False
            self.groups[topic] = (main_box, more_box, button)

    @staticmethod
    def _fold_text(title: str, more: list, unfolded: bool) -> str:
        return f"{'▾' if unfolded else '▸'} {title}  ({len(more)} more)"

    def is_unfolded(self, topic: str) -> bool:
        """Whether the rarely changed options of ``topic`` are shown."""
        _, more, _ = self.groups[topic]
        return not more.native.isHidden()

    def unfold(self, topic: str, show: bool = True) -> None:
        """Show (or fold away) the rarely changed options of ``topic``."""
        _, more, button = self.groups[topic]
        more.visible = show
        if button is not None:
            title = next(t for name, t, *_ in TOPICS if name == topic)
            button.text = self._fold_text(title, list(more), show)

    def topic_of(self, name: str) -> tuple[str, bool]:
        """The topic a field is under and whether it is folded away by default."""
        for topic, (main, more, _) in self.groups.items():
            if any(w is self._fields[name] for w in main):
                return topic, False
            if any(w is self._fields[name] for w in more):
                return topic, True
        raise KeyError(name)

    # -- building ---------------------------------------------------------------------------------
    def _make(self, name, hint, value, costs, tooltip):
        label = LABELS.get(name, name.replace("_", " "))
        common = {"name": name, "label": label, "tooltip": tooltip}
        if name == "device":
            choices = [AUTO, *available_devices()]
            return ComboBox(choices=choices, value=value if value in choices else AUTO, **common)
        if name == "augment":
            return Select(choices=list(AUGMENTATIONS), value=list(value or ()), **common)
        choices = literal_choices(name)
        if choices is not None:
            choices = [c for c in choices if name != "cost" or costs is None or c in costs]
            optional = type(None) in typing.get_args(hint)
            items = ([(f"{AUTO} (the step's natural cost)" if name == "cost" else AUTO, None)] if optional else [])
            items += [(c, c) for c in choices]
            return ComboBox(choices=items, value=value if value in choices else None, **common)
        if hint is bool:
            return CheckBox(value=bool(value), **common)
        bound = BOUNDS.get(name, Bound())
        if name in LOG_FIELDS:
            return ScientificEntry(value, bound=bound, **{**common, "tooltip": tooltip + " (e.g. 1e-4)"})
        if hint is float:
            return float_box(value, bound.min, FLOAT_MAX if bound.max is None else bound.max, bound.step, **common)
        if int in (hint, *typing.get_args(hint)):
            return self._int_box(name, value, bound, type(None) in typing.get_args(hint), common)
        return LineEdit(value=str(value), **common)

    @staticmethod
    def _int_box(name, value, bound, optional, common):
        """A spin box of an integer field. ``None`` (``max_epochs``: the step picks) shows as the
        minimum, one below the bound ("0 = auto" in the label); a ``seed`` of ``None`` shows the settings'
        seed."""
        if name == "seed":
            from .._settings import settings

            optional, value = False, int(settings.seed) if value is None else value
        lo = bound.min - 1 if optional else bound.min
        return (AutoSpinBox if optional else SpinBox)(value=lo if value is None else int(value), min=lo,
                                                      max=INT_MAX if bound.max is None else bound.max,
                                                      step=bound.step, **common)

    def _update_visibility(self, *_):
        self._fields["momentum"].visible = self._fields["optimizer"].value in MOMENTUM_OPTIMIZERS

    # -- reading / writing --------------------------------------------------------------------------
    def widget(self, name: str):
        return self._fields[name]

    @property
    def field_names(self) -> list[str]:
        """The names of the options shown (``TrainConfig`` fields and ``threads``)."""
        return list(self._fields)

    def values(self) -> dict:
        """The chosen options as ``TrainConfig`` keyword arguments, checked by ``TrainConfig``.

        ``momentum`` is left out for optimizers that ignore it; ``max_epochs`` at "auto" is ``None``
        (the step picks). Raises ``ValueError`` with the config's message on a bad value.
        """
        out = {}
        for name, w in self._fields.items():
            if isinstance(w, ScientificEntry):
                out[name] = w.number
            elif is_auto(w):
                out[name] = None if w.value == w.min else int(w.value)
            elif name == "augment":
                out[name] = list(w.value)
            else:
                out[name] = w.value
        if "momentum" in out and out.get("optimizer") not in MOMENTUM_OPTIMIZERS:
            out.pop("momentum")
        TrainConfig.from_kwargs(**{k: v for k, v in out.items() if k not in RUN_FIELDS})  # the API's checks
        return out

    def load_defaults(self, defaults: dict, keys) -> None:
        """Set the fields ``keys`` to ``defaults`` (``TrainConfig()``'s where ``defaults`` has none),
        e.g. when a panel's task changes to a step of other training defaults."""
        base = {**TrainConfig().to_dict(), **defaults}
        self.set_values(**{k: base[k] for k in keys if k in self._fields})

    def set_values(self, **values) -> None:
        for name, value in values.items():
            w = self._fields[name]
            if isinstance(w, ScientificEntry):
                w.number = value
            elif is_auto(w):
                w.value = w.min if value is None else value
            else:
                w.value = value


class AutoSpinBox(SpinBox):
    """A spin box of an optional whole number: its minimum means ``None`` (the step chooses)."""


def is_auto(widget) -> bool:
    """Whether ``widget`` is a spin box whose minimum means ``None``."""
    return isinstance(widget, AutoSpinBox)


def float_box(value: float, lo: float, hi: float, step: float | None, **kwargs) -> FloatSpinBox:
    """A spin box of ``lo`` to ``hi`` with as many decimals as they and ``step`` need (Qt rounds
    the range to the decimals: 0.9999 would become 1 with two)."""

    def decimals(x) -> int:
        text = f"{x:.10f}".rstrip("0")
        return len(text.split(".")[1])

    box = FloatSpinBox(value=lo, step=step or 0.1, **kwargs)
    box.native.setDecimals(max(2, *(decimals(x) for x in (lo, hi, step or 0.1))))
    box.min, box.max = lo, hi
    box.value = float(value)
    return box
