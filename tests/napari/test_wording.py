"""Plain words in the panels: tooltips without docstring markup for every field (a written
sentence where the docstring speaks code), errors without Python code, and a loss plot that names
its cost, marks the best epoch and shows no meaningless axes before the first epoch."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import numpy as np  # noqa: E402

from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, ClassicWidget, ImageModelWidget, LossPlot, TimeCourseWidget,
)
from scnapse.napari._wording import TOOLTIPS, plain, plain_error, widgets_of  # noqa: E402

from conftest import make_counts  # noqa: E402

pytestmark = pytest.mark.napari
PANELS = (AutoencoderWidget, CellClassifierWidget, ClassicWidget, ImageModelWidget, TimeCourseWidget)
MARKUP = re.compile(r"``|`|:func:|:class:|:meth:|:attr:|:data:|\*\*")


def fields(panel):
    out = []
    for part in (panel.inputs, panel.options, panel.train_options):
        if part is not None:
            out += widgets_of(part)
    return out


def test_plain_strips_markup():
    assert plain("The cost: ``mse`` or ``\"nb\"``; see :class:`~scnapse.models.Autoencoder`.") == (
        "The cost: mse or nb; see Autoencoder.")
    assert plain("``None``: the step picks; ``False``: off.") == "auto: the step picks; off: off."


@pytest.mark.parametrize("panel_type", PANELS, ids=lambda p: p.__name__)
def test_every_field_has_a_plain_tooltip(panel_type, make_napari_viewer):
    panel = panel_type(make_napari_viewer())
    seen = fields(panel)
    assert len(seen) >= 5
    for w in seen:
        tip = w.tooltip or ""
        assert tip.strip(), f"{panel_type.__name__}: {w.label or w.name!r} has no tooltip"
        assert not MARKUP.search(tip), f"{panel_type.__name__}: {w.name!r}: {tip!r}"
        assert "adata." not in tip and "scnapse.settings" not in tip and "obs[" not in tip, (w.name, tip)


def test_fields_without_a_docstring_entry_get_a_written_sentence(make_napari_viewer):
    viewer = make_napari_viewer()
    tips = {}
    for panel_type in (CellClassifierWidget, ImageModelWidget, TimeCourseWidget):
        tips.update({w.name: w.tooltip for w in fields(panel_type(viewer)) if w.name})
    for name in ("min_typicality", "size", "normalize", "hidden", "horizon"):
        assert tips[name] == TOOLTIPS[name]


def test_errors_in_panels_suggest_no_python_code(make_napari_viewer):
    message = plain_error("use_highly_variable=True but adata.var has no 'highly_variable' column; run "
                          "sc.pp.highly_variable_genes first or pass use_highly_variable=False.",
                          {"use_highly_variable": "HVGs only"})
    assert "=" not in message and "sc.pp" not in message
    assert '"HVGs only" off' in message and "highly variable genes" in message
    message = plain_error("3 reference cells are unlabelled; drop them (ref = ref[~ref.obs['x'].isna()].copy()) "
                          "or pass cost=None.")
    assert "ref[" not in message and "copy()" not in message and "=" not in message
    assert plain_error("open an .h5ad file, then pick .X") == "open an .h5ad file, then pick .X"  # not code
    panel = AutoencoderWidget(make_napari_viewer())
    panel._error(ValueError("pass use_highly_variable=False."))
    assert panel.last_error == 'pass "HVGs only" off.' and "HVGs only" in panel.status.text()


def report(epoch, train, val, best):
    return SimpleNamespace(epoch=epoch, max_epochs=5, train_loss=train, val_loss=val, best_epoch=best)


def test_loss_plot_names_the_cost_marks_the_best_epoch_and_starts_empty(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    assert plot.empty and any(t.get_text() == "no epochs yet" for t in plot.ax.texts)
    assert not plot.ax.axison  # no ±0.04 axes around nothing
    plot.reset("cross_entropy")
    assert plot.ylabel == "loss (cross-entropy)"
    for e, (t, v) in enumerate([(1.0, 1.1), (0.8, 0.7), (0.6, 0.9)], start=1):
        plot.add(report(e, t, v, best=2 if e >= 2 else 1))
    plot.redraw()
    assert not plot.empty and plot.ax.axison
    assert plot.best_line.get_visible() and list(plot.best_line.get_xdata()) == [2, 2]
    plot.reset()
    assert plot.empty and plot.ylabel == "loss"


def test_loss_plot_draws_the_start_at_epoch_0_and_marks_it_when_kept(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.reset("mse")
    for e, (t, v) in enumerate([(1.0, 0.9), (0.8, 0.8)], start=1):
        plot.add(SimpleNamespace(epoch=e, max_epochs=5, train_loss=t, val_loss=v, best_epoch=0, start_val_loss=0.5))
    plot.redraw()
    assert plot.epochs == [1, 2] and plot.start == 0.5
    assert list(plot.val_line.get_xdata()) == [0, 1, 2] and list(plot.val_line.get_ydata()) == [0.5, 0.9, 0.8]
    assert plot.best_line.get_visible() and list(plot.best_line.get_xdata()) == [0, 0]
    assert plot.ax.get_ylim()[0] < 0.5  # the start is inside the axes
    # a report without a start (older callers) leaves the curve as it was
    plot.reset("mse")
    plot.add(report(1, 1.0, 0.9, best=1))
    plot.redraw()
    assert plot.start is None and list(plot.val_line.get_xdata()) == [1]


def test_done_line_says_when_the_start_was_the_best(qtbot):
    from scnapse.napari._panel import StepPanel

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.reset("mse")
    for e, v in enumerate([0.9, 0.8], start=1):
        plot.add(SimpleNamespace(epoch=e, max_epochs=5, train_loss=1.0, val_loss=v, best_epoch=0, start_val_loss=0.5))
    line = StepPanel._epochs_line(SimpleNamespace(loss_plot=plot))
    assert line.startswith("2 epochs, best epoch 0 (the start, before training); final loss")
    plot.add(SimpleNamespace(epoch=3, max_epochs=5, train_loss=1.0, val_loss=0.4, best_epoch=3, start_val_loss=0.5))
    assert "3 epochs, best epoch 3;" in StepPanel._epochs_line(SimpleNamespace(loss_plot=plot))


def test_loss_plot_of_a_run_names_the_auto_cost(tmp_path, make_napari_viewer, qtbot):
    adata = make_counts()
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="scnapse")
    panel = AutoencoderWidget(viewer)
    panel.train_options.set_values(max_epochs=2, early_stopping=0, batch_size=64, validation_fraction=0.2)
    assert panel.train_options.values()["cost"] is None  # auto: the step chooses
    panel.run()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert "done" in panel.status.text()
    cost = get_cost(viewer)
    assert panel.loss_plot.ylabel == f"loss ({ {'nb': 'negative binomial', 'mse': 'mean squared error'}[cost]})"
    assert panel.loss_plot.best_line.get_visible()
    assert np.isfinite(panel.loss_plot.train).all()


def get_cost(viewer):
    from scnapse.napari import get_adata

    layer = next(x for x in viewer.layers if "scnapse_adata" in x.metadata or hasattr(x, "metadata"))
    return get_adata(layer).uns["autoencoder"]["params"]["cost"]
