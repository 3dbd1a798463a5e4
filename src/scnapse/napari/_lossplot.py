"""The live loss plot of a training panel."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: how the costs read on the plot's y axis
COST_NAMES = {"mse": "mean squared error", "bce": "binary cross-entropy", "cross_entropy": "cross-entropy",
              "kl": "Kullback–Leibler divergence", "hellinger": "Hellinger distance", "nb": "negative binomial",
              "zinb": "zero-inflated negative binomial", "poisson": "Poisson", "mae": "mean absolute error"}
EMPTY_TEXT = "no epochs yet"


def cost_label(cost: str | None) -> str:
    """The y label: ``"loss (mean squared error)"``, or ``"loss"`` when the cost is not known."""
    return f"loss ({COST_NAMES.get(cost, str(cost).replace('_', ' '))})" if cost else "loss"


class LossPlot(QWidget):
    """Training and validation loss per epoch, redrawn with ``draw_idle`` (never blocks the GUI),
    at most every ``redraw_ms`` milliseconds however fast the epochs come."""

    redraw_ms = 250

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.canvas.setMinimumHeight(150)
        self.ax = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.redraw_ms)
        self._timer.timeout.connect(self.redraw)
        self.reset()

    def reset(self, cost: str | None = None) -> None:
        """Empty the plot (axes hidden, "no epochs yet"); ``cost`` names the y axis."""
        self.epochs: list[int] = []
        self.train: list[float] = []
        self.val: list[float] = []
        self.best_epoch: int | None = None
        self.ax.clear()
        (self.train_line,) = self.ax.plot([], [], "-", color="#1f77b4", label="train")
        (self.val_line,) = self.ax.plot([], [], "-", color="#ff7f0e", label="validation")
        self.best_line = self.ax.axvline(0, color="#2ca02c", linestyle="--", linewidth=1, label="best epoch")
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
        self.best_epoch = getattr(report, "best_epoch", None)
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        self.train_line.set_data(self.epochs, self.train)
        self.val_line.set_data(self.epochs, self.val)
        if self.epochs and not self.ax.axison:
            self.ax.set_axis_on()
            self.empty_text.set_visible(False)
            self.ax.legend(fontsize=7, loc="upper right")
        if self.best_epoch:
            self.best_line.set_xdata([self.best_epoch, self.best_epoch])
            self.best_line.set_visible(True)
        self.ax.relim()
        self.ax.autoscale_view()
        self.canvas.draw_idle()
