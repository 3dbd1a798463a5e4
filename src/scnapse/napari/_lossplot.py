"""The live loss plot of a training panel."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


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

    def reset(self) -> None:
        self.epochs: list[int] = []
        self.train: list[float] = []
        self.val: list[float] = []
        self.ax.clear()
        (self.train_line,) = self.ax.plot([], [], "-", color="#1f77b4", label="train")
        (self.val_line,) = self.ax.plot([], [], "-", color="#ff7f0e", label="validation")
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_ylabel("loss", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.ax.legend(fontsize=7, loc="upper right")
        self.canvas.draw_idle()

    def add(self, report) -> None:
        self.epochs.append(report.epoch)
        self.train.append(report.train_loss)
        self.val.append(float("nan") if report.val_loss is None else report.val_loss)
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        self.train_line.set_data(self.epochs, self.train)
        self.val_line.set_data(self.epochs, self.val)
        self.ax.relim()
        self.ax.autoscale_view()
        self.canvas.draw_idle()
