"""A step's options as widgets, generated from the step's signature.

:class:`StepOptions` reads the keyword parameters of a step function (``scnapse.tl.autoencoder``,
``scanpy.pp.pca``, ...) and makes one widget per option: its kind from the annotation (or the
default's type), its value from the default, its tooltip from the step's numpy docstring. A
panel says only which options it does not show (``hide`` / ``show``), which it sets itself
(``fixed``), which pick from the data (``pickers``: ``obs`` columns, layers), and labels where
the parameter name reads badly. So a default changed in the step is the panel's default too.

Training options (``TrainConfig`` fields) are not step options: they go to
:class:`~._train_options.TrainOptions`, whose defaults are the family's
(:func:`family_train_defaults`).
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from dataclasses import dataclass

from magicgui.widgets import ComboBox, Container, LineEdit, SpinBox, create_widget

from .._settings import logger
from ..train.config import TrainConfig
from ..train.run import RUN_OPTIONS
from ._train_options import AUTO, FLOAT_MAX, INT_MAX, AutoSpinBox, float_box, is_auto, param_docs

#: parameters no panel shows: how a run is carried out, and in-place vs copy
SKIP = frozenset({"copy", "run", *RUN_OPTIONS})
#: labels of options whose names read badly
LABELS = {"n_latent": "latent size", "hidden": "hidden layers", "key_added": "key added", "labels_key": "labels (obs)",
          "pca_init": "start from PCA", "beta": "β (VAE KL weight)", "layer": "data", "class_weight": "class weight",
          "class_balance": "class balance", "n_layers": "recurrent layers", "cell": "recurrent cell",
          "use_time": "use time", "horizon": "forecast steps", "channels": "conv channels", "size": "crop size (px)",
          "normalize": "normalise", "log_normalize": "log-normalise", "use_highly_variable": "HVGs only",
          "min_confidence": "min confidence", "min_typicality": "min typicality", "n_comps": "PCA components",
          "n_neighbors": "neighbours (UMAP)", "perplexity": "perplexity (t-SNE)", "random_state": "seed",
          "linear_init": "start from the classical model", "ar_order": "AR steps"}
#: the GUI's range (min, max, step) of bounded step options; the step checks the value itself
RANGES = {"min_confidence": (0.0, 1.0, 0.05), "min_typicality": (0.0, 1.0, 0.01), "teacher_forcing": (0.0, 1.0, 0.05),
          "beta": (0.0, 100.0, 0.1), "perplexity": (2.0, 200.0, 1.0), "size": (8, 512, 1), "n_latent": (2, 1024, 1),
          "n_comps": (0, 500, 1), "n_neighbors": (2, 500, 1), "random_state": (0, 2**31 - 1, 1)}
TRI_STATE = ((AUTO, None), ("yes", True), ("no", False))


# -- reading a signature ------------------------------------------------------------------------------
def _resolve(annotation, func):
    """An annotation as a type (string annotations evaluated in the step's module); ``None`` when
    it cannot be read (then the default's type decides)."""
    if annotation is inspect.Parameter.empty:
        return None
    if not isinstance(annotation, str):
        return annotation
    namespace = {**vars(typing), **vars(collections.abc), **getattr(inspect.unwrap(func), "__globals__", {})}
    try:
        return eval(annotation, namespace)  # noqa: S307 - the step's own annotation, not user input
    except Exception:  # noqa: BLE001 - e.g. a name imported only for type checkers
        return None


def step_parameters(func) -> dict[str, inspect.Parameter]:
    """The keyword options of ``func`` a panel may show, annotations resolved: not the data and model
    (parameters before the keyword-only ones that have no default), not ``**options``, not
    :data:`SKIP`."""
    out = {}
    for name, p in inspect.signature(func).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in SKIP:
            continue
        if p.kind != p.KEYWORD_ONLY and p.default is p.empty:
            continue
        out[name] = p.replace(annotation=_resolve(p.annotation, func))
    return out


def step_defaults(func) -> dict:
    """``{name: default}`` of ``func``'s keyword options."""
    return {n: p.default for n, p in step_parameters(func).items() if p.default is not p.empty}


#: training step → (model class in scnapse.models, its per-task defaults key, the defaults dict of
#: scnapse releases before ``train_defaults``); a task of ``None`` is the step's ``method`` default
_FAMILY = {"autoencoder": ("Autoencoder", None, None), "train_classifier": ("CellClassifier", None, "classifier"),
           "train_image_classifier": ("ImageModel", "classify", "image_classifier"),
           "image_embedding": ("ImageModel", None, "image"), "sequence_embedding": ("SequenceModel", None, None),
           "train_sequence_classifier": ("SequenceModel", "classify", None),
           "train_forecaster": ("SequenceModel", "forecast", None)}


def _old_defaults(which: str | None) -> dict:
    if which == "classifier":
        from ..models.classifier import CLASSIFIER_DEFAULTS
        return dict(CLASSIFIER_DEFAULTS)
    if which is not None:
        from ..models import image
        return dict(image.CLASSIFIER_DEFAULTS if which == "image_classifier" else image.IMAGE_DEFAULTS)
    return {}


def family_train_defaults(step) -> dict:
    """The training defaults ``step`` trains with where they differ from ``TrainConfig()``'s: its model
    family's ``train_defaults`` (and per-task ones), then the step's own defaults of ``TrainConfig``
    fields (e.g. ``augment`` of ``train_image_classifier``)."""
    from .. import models

    name = getattr(step, "__name__", "")
    if name in _FAMILY:
        defaults = step_defaults(step)
        cls_name, task, old = _FAMILY[name]
        cls = getattr(models, cls_name)
        family = getattr(cls, "train_defaults", None)
        out = dict(_old_defaults(old) if family is None else family)
        task = task or defaults.get("method")
        out.update(getattr(cls, "task_train_defaults", {}).get(task, {}))
        out.update({k: v for k, v in defaults.items() if k in TrainConfig.field_names()})
        return out
    return {}


# -- widgets ------------------------------------------------------------------------------------------
class WidthsEntry(LineEdit):
    """A sequence of whole numbers as text: ``"256, 128"`` (``hidden``, ``channels``)."""

    def __init__(self, value, **kwargs):
        super().__init__(value=self.format(value), **kwargs)

    @staticmethod
    def format(value) -> str:
        if isinstance(value, (int, str)):
            return str(value)
        return ", ".join(str(int(v)) for v in value)

    @property
    def widths(self) -> list[int]:
        text = str(self.value).replace(",", " ").split()
        try:
            return [int(t) for t in text]
        except ValueError:
            raise ValueError(f"{self.label}: {self.value!r} must be whole numbers separated by commas, "
                             "e.g. '256, 64'.") from None

    @widths.setter
    def widths(self, value) -> None:
        self.value = self.format(value)


def _literal(hint):
    """``(choices, optional)`` of a ``Literal[...]`` or ``Literal[...] | None`` hint, else ``None``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return args, False
    literals = [a for a in args if typing.get_origin(a) is typing.Literal]
    if len(literals) == 1:
        return typing.get_args(literals[0]), type(None) in args
    return None


def _kind(hint, default) -> str | None:
    """What kind of widget an option gets: ``widths``, ``tri``, ``optional_int``, ``optional_text``, a
    plain type name, or ``None`` (not shown)."""
    args = set(typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin in (collections.abc.Sequence, list, tuple) and (not args or int in args):
        return "widths"
    if isinstance(default, (list, tuple)) and all(isinstance(v, int) for v in default):
        return "widths"
    if args and args <= {bool, type(None)} and len(args) == 2:
        return "tri"
    if args and args <= {int, type(None)} and len(args) == 2:
        return "optional_int"
    if args and args <= {str, type(None)} and len(args) == 2:
        return "optional_text"
    for kind in (bool, int, float, str):
        if hint is kind:
            return kind.__name__
    if hint is None or not args:
        for kind in (bool, int, float, str):
            if type(default) is kind:
                return kind.__name__
    return None


#: where the choices of options annotated as a plain ``str`` are kept: name → (module, constant)
VOCABULARIES = {"cell": ("..nn.rnn", "CELLS"), "class_weight": ("..models._labels", "CLASS_WEIGHTS"),
                "class_balance": ("..models.classifier", "CLASS_BALANCES"), "method": ("..models.image", "EMBED_METHODS")}


def vocabulary(name: str) -> list[tuple[str, object]] | None:
    """``[(label, value)]`` of an option whose annotation does not list its values, from the
    constant the step checks them against; ``None`` if there is none."""
    import importlib

    if name not in VOCABULARIES:
        return None
    module, constant = VOCABULARIES[name]
    try:
        values = getattr(importlib.import_module(module, __package__), constant)
    except (ImportError, AttributeError):
        return None
    return [("none" if v is None else str(v), v) for v in values]


@dataclass(frozen=True)
class Picker:
    """An option whose choices come from the data: ``choices(adata) -> [(label, value), ...]``."""

    choices: typing.Callable
    nullable: bool = False


class StepOptions:
    """The widgets of one step's options (added to a panel's form by the panel).

    Parameters
    ----------
    step
        The step function whose keyword parameters become widgets.
    show
        Show only these options (in this order); default: every option of :func:`step_parameters`.
    hide
        Options not shown (the step's default applies, or ``fixed``).
    fixed
        Values the panel always passes (not shown).
    pickers
        ``{name: Picker}``: options that pick from the data (``obs`` columns, layers).
    choices
        ``{name: [(label, value), ...]}`` for options whose choices the annotation does not say.
    labels, tooltips
        Overrides of :data:`LABELS` and of the docstring's description.
    """

    def __init__(self, step, *, show=None, hide=(), fixed=None, pickers=None, choices=None, labels=None,
                 tooltips=None):
        self.step = step
        self.fixed = dict(fixed or {})
        params = step_parameters(step)
        fields = set(TrainConfig.field_names())
        names = list(show) if show is not None else [n for n in params if n not in fields]
        docs = param_docs(inspect.getdoc(step) or "")
        self.widgets: dict[str, object] = {}
        self.defaults: dict[str, object] = {}
        self._pickers = dict(pickers or {})
        for name in names:
            if name in hide or name in self.fixed:
                continue
            p = params[name]
            label = (labels or {}).get(name) or LABELS.get(name, name.replace("_", " "))
            tooltip = (tooltips or {}).get(name) or docs.get(name, "")
            w = self._make(name, p, label, tooltip[:600], (choices or {}).get(name))
            if w is None:
                logger.debug("%s: option %r (%s) has no widget; not shown.", step.__name__, name, p.annotation)
                continue
            self.widgets[name] = w
            if p.default is not p.empty:
                self.defaults[name] = p.default
        self._required_text = {n for n, w in self.widgets.items()
                               if isinstance(w, LineEdit) and not isinstance(w, WidthsEntry)
                               and self.defaults.get(n) is not None}

    # -- building ---------------------------------------------------------------------------------
    def _make(self, name, p, label, tooltip, choices):
        default = None if p.default is p.empty else p.default
        common = {"name": name, "label": label, "tooltip": tooltip}
        if name in self._pickers:
            picker = self._pickers[name]
            return ComboBox(choices=picker.choices(None), value=default, nullable=picker.nullable, **common)
        literal = _literal(p.annotation)
        if choices is None and literal is not None:
            choices = [(str(c), c) for c in literal[0]] + ([("none", None)] if literal[1] else [])
        if choices is None and isinstance(default, str | None):
            choices = vocabulary(name)
        if choices is not None:
            return ComboBox(choices=list(choices), value=default, **common)
        kind = _kind(p.annotation, default)
        lo, hi, step = RANGES.get(name, (None, None, None))
        if kind == "widths":
            return WidthsEntry(default if default is not None else (), **common)
        if kind == "tri":
            return ComboBox(choices=list(TRI_STATE), value=default, **common)
        if kind == "optional_text":
            return LineEdit(value="" if default is None else str(default), **common)
        if kind == "optional_int":
            lo = 0 if lo is None else lo
            common["label"] = f"{label} ({lo} = {AUTO})"
            return AutoSpinBox(value=lo if default is None else default, min=lo, max=INT_MAX if hi is None else hi,
                               **common)
        if kind == "int":
            return SpinBox(value=default, min=1 if lo is None else lo, max=INT_MAX if hi is None else hi,
                           step=step or 1, **common)
        if kind == "float":
            return float_box(default, 0.0 if lo is None else lo, FLOAT_MAX if hi is None else hi, step, **common)
        if kind in ("bool", "str"):
            return create_widget(value=default, annotation=bool if kind == "bool" else str, name=name, label=label,
                                 options={"tooltip": tooltip})
        return None

    # -- reading / writing ------------------------------------------------------------------------
    def __contains__(self, name) -> bool:
        return name in self.widgets

    def widget(self, name: str):
        return self.widgets[name]

    def values(self) -> dict:
        """The options as the step's keyword arguments (the fixed ones included)."""
        out = dict(self.fixed)
        for name, w in self.widgets.items():
            value = read_value(w)
            if value is None and name in self._required_text:  # an emptied text option: the default
                value = self.defaults[name]
            out[name] = value
        return out

    def set_values(self, **values) -> None:
        for name, value in values.items():
            write_value(self.widgets[name], value)

    @property
    def visible(self) -> bool:
        return any(w.visible for w in self.widgets.values())

    @visible.setter
    def visible(self, value: bool) -> None:
        for w in self.widgets.values():
            w.visible = value

    def on_data(self, adata) -> None:
        """Re-read the pickers' choices from ``adata`` (keeping each value that is still there)."""
        for name, picker in self._pickers.items():
            if name not in self.widgets:
                continue
            w = self.widgets[name]
            current = w.value
            w.choices = picker.choices(adata)
            values = [v for _, v in w.choices] if w.choices and isinstance(w.choices[0], tuple) else list(w.choices)
            if current in values:
                w.value = current


def read_value(w):
    """An option widget's value as the step takes it (``""`` → ``None``, ``0`` → ``None`` for "auto")."""
    if isinstance(w, WidthsEntry):
        return w.widths
    if is_auto(w):
        return None if w.value == w.min else int(w.value)
    if isinstance(w, LineEdit):
        return str(w.value).strip() or None
    return w.value


def write_value(w, value) -> None:
    """Set an option widget from a step's value (the inverse of :func:`read_value`)."""
    if isinstance(w, WidthsEntry):
        w.widths = value
    elif is_auto(w):
        w.value = w.min if value is None else value
    elif isinstance(w, LineEdit):
        w.value = "" if value is None else str(value)
    else:
        w.value = value


class Option:
    """A panel attribute that is the widget of one step option: ``n_latent = Option("n_latent")``.

    Reads ``panel.step_options()`` (the options of the step the panel runs now) for the widget.
    """

    def __set_name__(self, owner, name):
        self.name = name

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name

    def __get__(self, panel, owner=None):
        if panel is None:
            return self
        for opts in panel.step_options():
            if self.name in opts:
                return opts.widget(self.name)
        raise AttributeError(f"{type(panel).__name__} shows no option {self.name!r} for its current task.")


# -- pickers ------------------------------------------------------------------------------------------
X_CHOICE = "X (adata.X)"


def layer_choices(adata) -> list[tuple[str, str | None]]:
    """``adata.X`` (``None``) or one of ``adata.layers``."""
    return [(X_CHOICE, None)] + [(k, k) for k in (adata.layers.keys() if adata is not None else ())]


def label_columns(adata) -> list[str]:
    """``obs`` columns that can hold classes (categories or strings)."""
    import pandas as pd

    if adata is None:
        return []
    return [c for c in adata.obs.columns
            if isinstance(adata.obs[c].dtype, pd.CategoricalDtype) or adata.obs[c].dtype == object]


LAYER = Picker(layer_choices)
LABELS_KEY = Picker(label_columns, nullable=True)
#: a batch column (``batch_key``): any categorical ``obs`` column, or none
BATCH_KEY = Picker(lambda adata: [("none", None)] + [(c, c) for c in label_columns(adata)])


def form(*parts) -> Container:
    """One labelled form of widgets and :class:`StepOptions` (their widgets in order): the labels of
    every part line up."""
    widgets = []
    for part in parts:
        widgets += list(part.widgets.values()) if isinstance(part, StepOptions) else [part]
    out = Container(labels=True)
    out.extend(widgets)  # added after construction, so that magicgui lines the labels up
    return out
