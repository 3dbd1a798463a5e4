"""The live loss plot of a training panel."""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ..pl._loss import COST_NAMES

EMPTY_TEXT = "no epochs yet"


def cost_label(cost: str | None) -> str:
    """The y label: ``"loss (mean squared error)"``, or ``"loss"`` when the cost is not known."""
    return f"loss ({COST_NAMES.get(cost, str(cost).replace('_', ' '))})" if cost else "loss"


class LossPlot(QWidget):
    """Training and validation loss per epoch, at most every ``redraw_ms`` milliseconds however
    fast the epochs come. A redraw only repaints the two lines over a saved background (blitting,
    a few milliseconds); the whole figure (axes, ticks, legend) is drawn again only when the
    curves leave the axes' range, which grows with headroom (a handful of times per run)."""

    redraw_ms = 250
    #: at most one whole-figure draw (new axes range) per this many seconds; the lines in between
    full_draw_s = 3.0

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90)
        # fixed margins: tight_layout would measure every text at every draw
        # (the legend sits in one row above the axes, never over the curves)
        self.figure.subplots_adjust(left=0.2, right=0.97, bottom=0.24, top=0.86)
        self.canvas = FigureCanvasQTAgg(self.figure)
        # a fixed height: a status line that wraps differently must not resize (and redraw) the plot
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.canvas.setFixedHeight(170)
        self.ax = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.redraw_ms)
        self._timer.timeout.connect(self.redraw)
        self._background = None
        self._last_full = float("-inf")
        self.full_draws = 0  # how many times the whole figure was drawn (the slow part)
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.reset()

    def reset(self, cost: str | None = None) -> None:
        """Empty the plot (axes hidden, "no epochs yet"); ``cost`` names the y axis."""
        self.epochs: list[int] = []
        self.train: list[float] = []
        self.val: list[float] = []
        self.best_epoch: int | None = None
        self.start: float | None = None  # validation loss before training, drawn at epoch 0
        self.ax.clear()
        self.max_epochs: int | None = None
        self._background = None
        (self.train_line,) = self.ax.plot([], [], "-", color="#1f77b4", label="train", animated=True)
        (self.val_line,) = self.ax.plot([], [], "-", color="#ff7f0e", label="validation", animated=True)
        self.best_line = self.ax.axvline(0, color="#2ca02c", linestyle="--", linewidth=1, label="best epoch",
                                         animated=True)
        self.best_line.set_visible(False)
        self.ax.set_xlabel("epoch", fontsize=8)
        self.set_cost(cost)
        self.ax.tick_params(labelsize=7)
        self.ax.set_axis_off()
        self.empty_text = self.ax.text(0.5, 0.5, EMPTY_TEXT, transform=self.ax.transAxes, ha="center",
                                       va="center", fontsize=8, color="#888888")
        self.canvas.draw_idle()

    def set_cost(self, cost: str | None) -> None:
        """Name the cost on the y axis (e.g. once an "auto" cost is known)."""
        self.cost = cost
        self.ax.set_ylabel(cost_label(cost), fontsize=8)
        if self.epochs:
            self.canvas.draw_idle()

    @property
    def ylabel(self) -> str:
        return self.ax.get_ylabel()

    @property
    def empty(self) -> bool:
        """Whether the plot shows "no epochs yet" (no axes)."""
        return not self.ax.axison

    def add(self, report) -> None:
        self.epochs.append(report.epoch)
        self.train.append(report.train_loss)
        self.val.append(float("nan") if report.val_loss is None else report.val_loss)
        self.max_epochs = getattr(report, "max_epochs", None) or self.max_epochs
        self.best_epoch = getattr(report, "best_epoch", None)
        start = getattr(report, "start_val_loss", None)
        if start is not None and math.isfinite(start):
            self.start = float(start)
        if not self._timer.isActive():
            self._timer.start()

    def legend_handles(self) -> list:
        """Stand-ins for the legend: the lines themselves are drawn apart (blitting) and the best-epoch
        line is hidden until there is one, which would leave its legend entry blank."""
        from matplotlib.lines import Line2D

        return [Line2D([], [], color=line.get_color(), linestyle=line.get_linestyle(),
                       linewidth=line.get_linewidth(), label=line.get_label())
                for line in (self.train_line, self.val_line, self.best_line)]

    def _on_draw(self, _event) -> None:
        """After a full draw: keep the background (without the lines), then paint the lines."""
        self.full_draws += 1
        self._background = self.canvas.copy_from_bbox(self.ax.bbox)
        self.ax.draw_artist(self.train_line)  # the canvas shows them when the draw ends
        self.ax.draw_artist(self.val_line)
        self.ax.draw_artist(self.best_line)

    def _blit_lines(self) -> None:
        self.ax.draw_artist(self.train_line)
        self.ax.draw_artist(self.val_line)
        self.ax.draw_artist(self.best_line)
        self.canvas.blit(self.ax.bbox)

    def _finite_losses(self) -> list[float]:
        start = () if self.start is None else (self.start,)
        return [v for v in (*self.train, *self.val, *start) if math.isfinite(v)]

    def _val_data(self) -> tuple[list[int], list[float]]:
        """The validation curve, from the start (epoch 0) where it was measured."""
        if self.start is None:
            return self.epochs, self.val
        return [0, *self.epochs], [self.start, *self.val]

    def _limits_ok(self) -> bool:
        """Whether the curves fit the current axes and still fill a fair part of them."""
        values = self._finite_losses()
        if not values:
            return True
        lo, hi = min(values), max(values)
        y0, y1 = self.ax.get_ylim()
        x0, x1 = self.ax.get_xlim()
        fits = y0 <= lo and hi <= y1 and self.epochs[-1] <= x1 and x0 <= self.epochs[0]
        return fits and (hi - lo) >= 0.25 * (y1 - y0)

    def _set_limits(self) -> None:
        values = self._finite_losses()
        right = max(self.max_epochs or 0, self.epochs[-1] if self.epochs else 1, 2)
        # a little room on the right: a best epoch that is the last one is not hidden on the frame
        self.ax.set_xlim(0, right + max(0.5, 0.02 * right))
        if values:
            lo, hi = min(values), max(values)
            span = hi - lo if hi > lo else 0.05 * (abs(hi) or 1.0)
            # losses fall: room below for the next epochs, so that few full draws are needed
            self.ax.set_ylim(lo - 0.6 * span, hi + 0.08 * span)

    def flush(self) -> None:
        """Show every epoch received so far now (at the end of a run), with the whole figure."""
        self._timer.stop()
        self._background = None
        self.redraw()

    def redraw(self) -> None:
        """Show the epochs so far: the lines alone when the axes still fit them, else everything."""
        self.train_line.set_data(self.epochs, self.train)
        self.val_line.set_data(*self._val_data())
        if not self.epochs:
            return
        first = not self.ax.axison
        if first:  # the first epoch: axes and legend replace "no epochs yet"
            self.ax.set_axis_on()
            self.empty_text.set_visible(False)
            self.ax.legend(handles=self.legend_handles(), fontsize=7, loc="lower center", ncol=3,
                           bbox_to_anchor=(0.5, 1.0), frameon=False, borderaxespad=0.2, handlelength=1.5)
        if self.best_epoch or (self.best_epoch == 0 and self.start is not None):
            self.best_line.set_xdata([self.best_epoch, self.best_epoch])
            self.best_line.set_visible(True)
        now = time.monotonic()
        if first or self._background is None or (not self._limits_ok() and now - self._last_full >= self.full_draw_s):
            self._last_full = now
            self._set_limits()
            self._background = None
            self.canvas.draw_idle()  # the draw event saves the background and paints the lines
            return
        self.canvas.restore_region(self._background)
        self._blit_lines()
