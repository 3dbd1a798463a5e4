"""Panels docked side by side are as wide as their fields (no field cut off behind a sideways
scroll bar), and the loss plot's legend stays off the curves and shows the best-epoch line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from scnapse.napari import (  # noqa: E402
    AutoencoderWidget, CellClassifierWidget, ImageModelWidget, LossPlot, TimeCourseWidget,
)

pytestmark = pytest.mark.napari


def test_docked_panels_are_as_wide_as_their_fields(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 980)
    panels = [cls(viewer) for cls in (AutoencoderWidget, CellClassifierWidget, ImageModelWidget, TimeCourseWidget)]
    for panel in panels:
        viewer.window.add_dock_widget(panel, area="right")
    qtbot.wait(200)
    # the Image model's fields are wider than the 320 px a panel used to be given
    assert max(p.scroll.widget().minimumSizeHint().width() for p in panels) > 330
    for panel in panels:
        body = panel.scroll.widget()
        assert panel.scroll.viewport().width() >= body.minimumSizeHint().width(), type(panel).__name__
        assert not panel.scroll.horizontalScrollBar().isVisible(), type(panel).__name__


def test_loss_plot_legend_is_above_the_axes_and_shows_the_best_epoch(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 170)
    plot.reset("mse")
    for e, (t, v) in enumerate([(1.0, 1.1), (0.8, 0.9), (0.6, 0.7)], start=1):
        plot.add(SimpleNamespace(epoch=e, max_epochs=3, train_loss=t, val_loss=v, best_epoch=e))
    plot.redraw()
    plot.canvas.draw()
    legend = plot.ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train", "validation", "best epoch"]
    best = legend.get_lines()[2]
    assert best.get_visible() and best.get_linestyle() == "--"  # not a blank entry
    renderer = plot.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y0 >= plot.ax.get_window_extent(renderer).y1 - 1
    # the best epoch is the last one: the dashed line is inside the axes, not on their frame
    assert plot.ax.get_xlim()[1] > 3
