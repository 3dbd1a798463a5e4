"""Every panel's defaults are the API's: each shown step option starts at the step signature's
default, each training option at the model family's training default (``TrainConfig``'s where the
family has none), and each bounded training option has exactly ``TrainConfig``'s bounds."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from magicgui.widgets import Select  # noqa: E402

import scnapse.tl as tl  # noqa: E402
from scnapse import models  # noqa: E402
from scnapse._settings import settings  # noqa: E402
from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, ClassicWidget, ImageModelWidget, ScientificEntry, TimeCourseWidget,
)
from scnapse.napari._options import StepOptions, WidthsEntry, family_train_defaults, read_value  # noqa: E402
from scnapse.napari._train_options import is_auto  # noqa: E402
from scnapse.train.config import BOUNDS, TrainConfig  # noqa: E402

pytestmark = pytest.mark.napari
PANELS = (AutoencoderWidget, CellClassifierWidget, ClassicWidget, ImageModelWidget, TimeCourseWidget)


def family_defaults(step) -> dict:
    """What the model classes themselves declare for the training step ``step``."""
    image = getattr(models.ImageModel, "defaults_for", None)
    table = {
        "autoencoder": models.Autoencoder.train_defaults,
        "train_classifier": models.CellClassifier.train_defaults,
        "train_image_classifier": image("classify") if image else models.ImageModel.train_defaults,
        "image_embedding": image("embed") if image else models.ImageModel.train_defaults,
    }
    out = dict(table.get(step.__name__, models.SequenceModel.train_defaults))
    own = {n: p.default for n, p in inspect.signature(step).parameters.items() if n in TrainConfig.field_names()}
    return {**out, **own}  # a TrainConfig field in the step's own signature (augment) wins


def plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def train_value(w):
    if isinstance(w, ScientificEntry):
        return w.number
    if is_auto(w):
        return None if w.value == w.min else w.value
    if isinstance(w, Select):
        return list(w.value)
    return w.value


def task_combo(panel):
    """The panel's task chooser (``None`` for panels of one task)."""
    if isinstance(panel, TimeCourseWidget):
        return panel.task
    return getattr(panel, "mode", None) if isinstance(panel, (CellClassifierWidget, ImageModelWidget)) else None


@pytest.mark.parametrize("panel_cls", PANELS, ids=lambda c: c.__name__)
def test_every_panel_default_is_the_signature_default(panel_cls, make_napari_viewer):
    viewer = make_napari_viewer()
    panel = panel_cls(viewer)
    shown = 0
    combo = task_combo(panel)
    for task in list(combo.choices) if combo is not None else [None]:
        if combo is not None:
            combo.value = task
        for opts in panel.step_options():
            signature = inspect.signature(opts.step).parameters
            for name, widget in opts.widgets.items():
                param = signature[name]
                if param.default is inspect.Parameter.empty:  # a required picker (labels_key): no default
                    assert widget.value is None, (opts.step.__name__, name)
                    continue
                assert plain(read_value(widget)) == plain(param.default), (panel_cls.__name__, task, name)
                shown += 1
        if panel.train_options is None:
            continue
        step = panel.train_step()
        expected = {**TrainConfig().to_dict(), **family_defaults(step)}
        expected["seed"] = settings.seed if expected["seed"] is None else expected["seed"]
        for name in TrainConfig.field_names():
            if name in panel.train_options._fields:
                got = train_value(panel.train_options.widget(name))
                assert plain(got) == plain(expected[name]), (panel_cls.__name__, task, step.__name__, name)
    assert shown >= 3  # the panel does show step options


@pytest.mark.parametrize("panel_cls", [p for p in PANELS if p is not ClassicWidget], ids=lambda c: c.__name__)
def test_every_trainconfig_bound_is_the_panel_bound(panel_cls, make_napari_viewer):
    panel = panel_cls(make_napari_viewer())
    checked = 0
    for name, bound in BOUNDS.items():
        w = panel.train_options.widget(name)
        if isinstance(w, ScientificEntry):  # a text entry: its number is refused out of the bounds
            assert (w.min, w.max) == (bound.min, bound.max), name
            w.number = bound.min
            if bound.open_min:
                with pytest.raises(ValueError, match=name):
                    _ = w.number
            w.number = 1e-3
        else:
            lo = bound.min - 1 if is_auto(w) else bound.min  # the "auto" (None) value sits below the bound
            assert w.min == lo, name
            if bound.max is not None:
                assert w.max == bound.max, name
            if bound.step is not None:
                assert w.step == bound.step, name
        checked += 1
    assert checked == len(BOUNDS)


def test_panel_defaults_the_api_changed_are_the_api_defaults(make_napari_viewer):
    """Defaults the panels once typed themselves (crop size 32, channels "16, 32", time-course
    hidden 32, the classifier's batch size) now come from the steps and the families."""
    viewer = make_napari_viewer()
    image, tracks = ImageModelWidget(viewer), TimeCourseWidget(viewer)
    from scnapse.im import cells_from_labels

    crops = inspect.signature(cells_from_labels).parameters
    assert image.size.value == crops["size"].default
    assert image.channels.widths == list(inspect.signature(tl.train_image_classifier).parameters["channels"].default)
    hidden = inspect.signature(tl.sequence_embedding).parameters["hidden"].default
    assert plain(read_value(tracks.hidden)) == plain(hidden)
    classifier = CellClassifierWidget(viewer)
    assert classifier.train_options.widget("batch_size").value == models.CellClassifier.train_defaults["batch_size"]
    # switching the image task loads that task's training defaults
    image.mode.value = image.mode.choices[1]
    assert image.train_options.widget("validation_fraction").value == TrainConfig().validation_fraction
    image.mode.value = image.mode.choices[0]
    assert image.train_options.widget("validation_fraction").value == family_train_defaults(
        tl.train_image_classifier)["validation_fraction"]


def test_step_options_follow_any_signature(qtbot):
    """A step's options become widgets by their annotation; run choices, copy, training fields and
    the data are not shown; values read back as the step takes them."""

    def step(adata, model, *, n: int = 7, widths: Sequence[int] = (3, 4), kind: Literal["a", "b"] = "b",
             weight: Literal["x"] | None = None, flag: bool | None = None, rate: float = 0.25, key: str | None = None,
             name: str = "out", on: bool = True, copy: bool = False, run=None, progress: bool = True,
             lr: float = 1e-3, **options):
        """A step.

        Parameters
        ----------
        n
            How many.
        """

    opts = StepOptions(step)
    assert list(opts.widgets) == ["n", "widths", "kind", "weight", "flag", "rate", "key", "name", "on"]
    assert opts.values() == {"n": 7, "widths": [3, 4], "kind": "b", "weight": None, "flag": None, "rate": 0.25,
                             "key": None, "name": "out", "on": True}
    assert opts.widget("n").tooltip == "How many."
    assert list(opts.widget("weight").choices) == ["x", None] and isinstance(opts.widget("widths"), WidthsEntry)
    opts.set_values(widths=[8], flag=False, key="k")
    opts.widget("name").value = ""  # an emptied text option that may not be None: its default
    values = opts.values()
    assert (values["widths"], values["flag"], values["key"], values["name"]) == ([8], False, "k", "out")
    opts.widget("widths").value = "8, x"
    with pytest.raises(ValueError, match="widths.*whole numbers"):
        opts.values()
    hidden = StepOptions(step, hide=("kind",), fixed={"name": "fixed"}, show=("n", "kind", "name"))
    assert list(hidden.widgets) == ["n"] and hidden.values() == {"name": "fixed", "n": 7}
