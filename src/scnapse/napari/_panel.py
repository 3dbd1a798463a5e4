"""What every step panel shares: pick the cells, run the step in a worker thread with a live loss
plot and a napari progress bar, Run ↔ Cancel, errors as notifications, "Save pipeline…".

A panel turns its widgets into a list of :class:`Call` — *registered pipeline steps* with their
parameters — and runs them through :func:`scnapse.pipeline.get_step`, the same functions a
pipeline file runs. What succeeded is recorded in the layer's :class:`~._layers.Session`, which
"Save pipeline…" writes as a pipeline file and a Python script: the GUI and ``scnapse run``
cannot compute different things.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication, QFileDialog, QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

from ._events import _connect_layer_events, adata_points_layers, refresh_cells_choice
from ._layers import ADATA, SESSION, ModelRef, features_of, get_adata, refresh_features
from ._legend import LegendLabel
from ._scatter import refresh_scatter
from ._lossplot import LossPlot
from ._options import StepOptions, family_train_defaults
from ._train_options import TrainOptions
from ._wording import plain_error, widgets_of, word_panel


@dataclass
class Call:
    """One step to run: a registered pipeline step name and its (recordable) parameters.

    ``func`` runs a step that is not a pipeline step (``train_classifier`` returns a model);
    such calls are not recorded (``record=False``) and their result is kept under ``returns``
    for later calls of the same run, which refer to it with a :class:`ModelRef` parameter.
    """

    name: str
    params: dict = field(default_factory=dict)
    trains: bool = False  # gets callback= / cancel= / progress=False while running
    step_id: str | None = None
    func: object = None
    record: bool = True
    returns: str | None = None


class _Relay(QObject):
    """Carries the worker thread's news to the GUI thread through queued Qt signals of ONE
    object, so that they arrive in order (every epoch report before the end)."""

    report = Signal(object)
    done = Signal(object)
    failed = Signal(object)


#: key of the data made by a panel's ``prepare`` function (in the worker) among a run's results
PREPARED = "__prepared__"
#: key of ``(adata, features_of(adata))`` made in the worker after the steps, among a run's results
FEATURES = "__features__"
#: key of what the panel's :meth:`StepPanel.result_preparer` made in the worker, among a run's results
SHOWN = "__shown__"
#: the GIL switch interval (s) while a panel's worker runs: the GUI thread waits at most this long
#: for the interpreter when the worker runs Python code (Python's default: 5 ms, at every event)
GUI_SWITCH_INTERVAL = 0.001
#: at most this many characters of an error in a panel's status line (the notification has it all)
STATUS_CHARS = 240
_SLOTS = ("obsm", "varm", "obsp", "layers", "uns")


def _snapshot(adata) -> dict:
    """What a training step may overwrite, to put back when it is cancelled before its first epoch."""
    saved = {attr: dict(getattr(adata, attr)) for attr in _SLOTS}
    saved["obs"] = adata.obs.copy(deep=False)
    return saved


def _restore(adata, saved: dict) -> None:
    for attr in _SLOTS:
        mapping = getattr(adata, attr)
        for key in [k for k in mapping.keys() if k not in saved[attr]]:
            del mapping[key]
        for key, value in saved[attr].items():
            if key not in mapping or mapping[key] is not value:
                mapping[key] = value
    adata.obs = saved["obs"]


def _clip(message: str, chars: int = STATUS_CHARS, lines: int = 3) -> str:
    """The first few lines / characters of ``message`` (with … when something was left out)."""
    parts = message.splitlines() or [""]
    short = "\n".join(parts[:lines])
    if len(short) > chars:
        short = short[:chars].rstrip()
    return short + (" …" if short != message else "")


_interval_lock = threading.Lock()
_interval_users = [0, None]  # workers running, the switch interval to put back when none is


def _gui_first(running: bool) -> None:
    """While any panel's worker runs, the GIL switch interval is :data:`GUI_SWITCH_INTERVAL`
    (the numbers computed do not change; only how soon the GUI thread gets the interpreter)."""
    with _interval_lock:
        if running:
            if _interval_users[0] == 0:
                _interval_users[1] = sys.getswitchinterval()
                sys.setswitchinterval(min(_interval_users[1], GUI_SWITCH_INTERVAL))
            _interval_users[0] += 1
        elif _interval_users[0] > 0:
            _interval_users[0] -= 1
            if _interval_users[0] == 0:
                sys.setswitchinterval(_interval_users[1])


_warm_up = []  # the thread that loads torch's optimiser stack, once per process


def _warm_up_training() -> None:
    """Load what a first training loads on first use (torch's optimisers pull in its compiler
    stack: about 800 modules, 1–4 s, holding the interpreter lock for up to ~0.2 s at a time) in a
    background thread when the first panel opens, while the user picks options, instead of in the
    worker while the loss plot should be drawing. Not a daemon: an exit waits for it."""
    if _warm_up:
        return

    def load():
        try:
            import torch

            p = torch.zeros(1, requires_grad=True)
            torch.optim.Adam([p])
        except Exception:  # noqa: BLE001 - only a warm-up; a real training reports its own errors
            pass

    thread = threading.Thread(target=load, name="scnapse-warm-up")
    _warm_up.append(thread)
    thread.start()


def _run_calls(adata, calls: list[Call], relay: _Relay, cancel: threading.Event, prepare=None,
               finish=None) -> None:
    """Worker-thread body: run ``calls`` on ``adata`` in order; report each epoch, then the calls
    that ran (or the error) through ``relay``. ``prepare()``, if given, first makes the data (e.g.
    crops from an image: slow work kept off the GUI thread) and returns ``(adata, extra)``. After
    the calls, the layers' new ``features`` and ``finish(adata, features)`` (what the panel will
    show, e.g. a :class:`~._layers.PreparedEmbedding`) are made here too, off the GUI thread."""
    from ..pipeline import get_step

    done, results = [], {}
    try:
        if prepare is not None:
            adata, extra = prepare()
            results[PREPARED] = (adata, extra)
        for call in calls:
            if cancel.is_set():
                break
            func = call.func or get_step(call.name).func
            kwargs = {k: results[v.name] if isinstance(v, ModelRef) else v for k, v in call.params.items()}
            epochs = []
            if call.trains:
                def report(r, _epochs=epochs):
                    _epochs.append(r.epoch)
                    relay.report.emit(r)
                kwargs.update(callback=report, cancel=cancel, progress=False)
                saved = _snapshot(adata)
            out = func(adata, **kwargs)
            if call.trains and cancel.is_set() and not epochs:
                _restore(adata, saved)  # cancelled before the first epoch: nothing changed
                break
            if call.returns:
                results[call.returns] = out
            done.append(call)
        if done:
            features = features_of(adata)
            results[FEATURES] = (adata, features)
            if finish is not None:
                try:
                    results[SHOWN] = finish(adata, features)
                except Exception:  # noqa: BLE001 - the GUI thread makes it again and reports the problem
                    pass
    except Exception as err:  # noqa: BLE001 - every error goes to the GUI as a notification
        err.__scnapse_done__ = (done, results)
        relay.failed.emit(err)
    else:
        relay.done.emit((done, results))


def _resolved_cost(adata, calls: list[Call], results: dict) -> str | None:
    """The cost a training call used: the model's, else ``uns[key]["params"]["cost"]`` (an "auto"
    cost is known only once the step has chosen it)."""
    for model in results.values():
        cost = getattr(model, "cost", None) or getattr(getattr(model, "params", None), "get", lambda _: None)("cost")
        if isinstance(cost, str):
            return cost
    for call in calls:
        if not call.trains:
            continue
        for key in (call.params.get("key_added"), call.step_id, call.name.rsplit(".", 1)[-1]):
            entry = adata.uns.get(key) if isinstance(key, str) else None
            cost = entry.get("params", {}).get("cost") if isinstance(entry, dict) else None
            if isinstance(cost, str):
                return cost
    return None


class StepPanel(QWidget):
    """Base of the dock widgets. Subclasses set ``title`` and implement :meth:`make_options`,
    :meth:`calls` (widgets → steps) and :meth:`show_results` (results → layers)."""

    title = "step"
    run_text = "Run"
    trains = True

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        _warm_up_training()
        self.viewer = napari_viewer
        self._worker = None
        self._cancel = threading.Event()
        self._progress = None
        self._last_report = None
        self.last_error: str | None = None

        # everything scrolls inside the dock: a panel fits any screen
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        outer.addWidget(self.scroll)
        body = QWidget()
        self.scroll.setWidget(body)
        layout = QVBoxLayout(body)
        self.cells = ComboBox(label="cells", choices=self._adata_layers, nullable=True,
                              tooltip="The Points layer of the AnnData to run on (open an .h5ad or a sample).")
        self.inputs = Container(widgets=[self.cells], labels=True)
        layout.addWidget(self.inputs.native)
        self.options = self.make_options()
        if self.options is not None:
            layout.addWidget(self.options.native)
        self.train_options = self.make_train_options() if self.trains else None
        if self.train_options is not None:
            layout.addWidget(QLabel("<b>Training</b>"))
            layout.addWidget(self.train_options.native)

        buttons = QHBoxLayout()
        self.run_button = QPushButton(self.run_text)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.save_button = QPushButton("Save pipeline…")
        self.save_button.setToolTip("Write what was run on these cells as a pipeline file (and a Python script).")
        self.save_button.clicked.connect(self._on_save_clicked)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.save_button)
        layout.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.legend = LegendLabel(self.legend_layers)  # the colours of the result, explained
        layout.addWidget(self.legend)
        self.loss_plot = LossPlot() if self.trains else None
        if self.loss_plot is not None:
            layout.addWidget(self.loss_plot)
        layout.addStretch(1)

        # the end of a run is shown in short steps, one per turn of the event loop
        self._stages: list[tuple] = []
        self._in_stage = False
        self.end_slices: list[tuple[str, float, float]] = []
        self.prepared = None
        self._stage_timer = QTimer(self)
        self._stage_timer.setSingleShot(True)
        self._stage_timer.setInterval(0)
        self._stage_timer.timeout.connect(self._next_stage)

        self._relay = _Relay()
        self._relay.report.connect(self._on_report)
        self._relay.done.connect(self._on_returned)
        self._relay.failed.connect(self._on_errored)
        _connect_layer_events(self, self._refresh_choices)
        self.cells.changed.connect(self._on_cells_picked)
        self._refresh_choices()
        word_panel(self)
        # closing napari stops a running training (a worker thread must not outlive the viewer)
        qt_window = getattr(getattr(napari_viewer, "window", None), "_qt_window", None)
        if qt_window is not None:
            qt_window.installEventFilter(self)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def _body_width(self) -> int:
        """The width the fields need, with the vertical scroll bar (the panel scrolls up and down only)."""
        body = self.scroll.widget()
        return max(320, body.minimumSizeHint().width() + self.scroll.verticalScrollBar().sizeHint().width() + 2)

    def sizeHint(self):  # noqa: N802 - Qt's name
        hint = super().sizeHint()
        hint.setHeight(min(hint.height(), 900))
        hint.setWidth(max(hint.width(), self._body_width()))
        return hint

    def minimumSizeHint(self):  # noqa: N802 - Qt's name
        # as wide as the fields: a dock narrower than them cut them off behind a sideways scroll bar
        hint = super().minimumSizeHint()
        hint.setWidth(max(hint.width(), self._body_width()))
        return hint

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def shutdown(self, timeout: float = 1.0) -> bool:
        """Stop a running step and wait (at most ``timeout`` s) for its thread to end; ``True`` if
        nothing is left running. Called when the viewer closes."""
        finished = getattr(self, "_finished", None)
        if finished is None:
            return True
        if not finished.is_set():
            self.stop_requested_at = time.perf_counter()
        self._cancel.set()
        return finished.wait(timeout)

    # -- for subclasses ------------------------------------------------------------------------------
    #: the costs the training options offer (``None``: all of ``TrainConfig``'s)
    train_costs: tuple[str, ...] | None = None
    #: ``TrainConfig`` fields the training options do not show
    train_exclude: tuple[str, ...] = ("augment",)

    def make_options(self) -> Container | None:
        """The panel's form. Panels that run steps fill ``self.option_sets`` (``{task: [StepOptions]}``,
        task ``None`` for every task) and ``self.train_steps`` (``{task: training step}``) here."""
        return None

    def current_task(self) -> str | None:
        """The task chosen now (panels with one task: ``None``)."""
        return None

    def step_options(self, *, every: bool = False) -> list[StepOptions]:
        """The option sets of the steps the current task runs (``every``: of every task)."""
        sets = getattr(self, "option_sets", {})
        if not every:
            return list(sets.get(self.current_task(), sets.get(None, [])))
        out = []
        for group in sets.values():
            out += [opts for opts in group if all(opts is not seen for seen in out)]
        return out

    def train_step(self):
        """The training step of the current task (its family's defaults fill the training options)."""
        steps = getattr(self, "train_steps", {})
        return steps.get(self.current_task(), steps.get(None))

    def make_train_options(self) -> TrainOptions | None:
        step = self.train_step()
        if step is None:
            return None
        return TrainOptions(defaults=family_train_defaults(step), costs=self.train_costs, exclude=self.train_exclude,
                            workload=getattr(step, "thread_workload", None))

    def show_task(self, *_) -> None:
        """Show the options of the current task's steps (and its training defaults); hide the others."""
        active = self.step_options()
        for opts in self.step_options(every=True):
            opts.visible = any(opts is a for a in active)
        options = getattr(self, "train_options", None)
        if options is not None:
            steps = set(getattr(self, "train_steps", {}).values())
            keys = set().union(*(family_train_defaults(s) for s in steps))
            options.load_defaults(family_train_defaults(self.train_step()), keys)
        self.on_task_changed()
        if hasattr(self, "run_button") and not self.running:
            self.run_button.setText(self.run_text)

    def legend_layers(self) -> list:
        """The layers whose colouring the panel's legend explains (the one it ran on)."""
        return [getattr(self, "result_layer", None) or self.layer]

    def on_task_changed(self) -> None:
        """Show or hide widgets that depend on the task (after :meth:`show_task`)."""

    def calls(self, adata) -> list[Call]:  # pragma: no cover - every panel defines its own
        """The step calls one press of Run makes (each panel says which)."""
        raise TypeError(f"{type(self).__name__} does not say which steps it runs (define calls()).")

    def show_results(self, layer, calls: list[Call]) -> None:
        pass

    def result_preparer(self, layer, calls: list[Call]):
        """A function ``f(adata, features)`` run in the worker thread after the steps, that makes
        what :meth:`show_results` will show (for example a :class:`~._layers.PreparedEmbedding`:
        colours, features, legend), kept in ``self.prepared``; ``None``: nothing to make. Called on
        the GUI thread when the run starts: read the widgets here, not in ``f``."""
        return None

    def on_cells_changed(self, adata) -> None:
        """Update widgets that list the AnnData's columns / layers (the option pickers)."""
        for opts in self.step_options(every=True):
            opts.on_data(adata)

    # -- cells ---------------------------------------------------------------------------------------
    def _adata_layers(self, *_):
        return adata_points_layers(self.viewer)

    def _on_cells_picked(self, *_):
        if self._worker is not None:
            return
        try:
            self.on_cells_changed(get_adata(self.cells.value) if self.cells.value is not None else None)
        except ValueError:
            self.on_cells_changed(None)

    def _refresh_choices(self, *_):
        if self._worker is not None:
            return
        refresh_cells_choice(self.cells, self.viewer)
        try:
            self.on_cells_changed(get_adata(self.cells.value) if self.cells.value is not None else None)
        except ValueError:
            self.on_cells_changed(None)

    @property
    def layer(self):
        return self.cells.value

    # -- running -------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def run(self):
        """Start the step (what the Run button does); returns the worker, or ``None`` on bad input
        (then a notification says why)."""
        if self._worker is not None:
            return None
        try:
            layer = self.layer
            adata = get_adata(layer)
            calls = self.calls(adata)
        except (ValueError, KeyError, TypeError) as err:
            self._error(err)
            return None
        self._start(layer, adata, calls)
        return self._worker

    def cancel(self) -> None:
        """Stop training (the best model so far is kept and shown)."""
        if self._worker is not None:
            self._cancel.set()
            self.run_button.setEnabled(False)
            self.run_button.setText("Cancelling…")

    def _on_run_clicked(self):
        if self._worker is not None:
            self.cancel()
        else:
            self.run()

    def _start(self, layer, adata, calls: list[Call], prepare=None) -> None:
        self._calls = list(calls)
        self._cancel = threading.Event()
        self._last_report = None
        self._summary = None
        self.last_error = None
        if self.loss_plot is not None:
            self.loss_plot.reset(next((c.params.get("cost") for c in calls if c.trains), None))
        self._set_running(True)
        self.status.setText(f"{self.title}: running…")
        self._running_layer = layer
        self._finished = finished = threading.Event()
        self.prepared = None
        try:
            finish = self.result_preparer(layer, calls)
        except Exception:  # noqa: BLE001 - then show_results makes it on the GUI thread (and reports a problem)
            finish = None

        def body(*args):
            try:
                _run_calls(*args)
            finally:
                _gui_first(False)
                self.stopped_at = time.perf_counter()
                finished.set()

        worker = create_worker(body, adata, calls, self._relay, self._cancel, prepare, finish,
                               _start_thread=False, _ignore_errors=True)
        self._worker = worker
        training = next((c for c in calls if c.trains), None)
        if training is not None and self._progress is None:
            # napari's progress bar now, before the worker competes for the interpreter (its first
            # appearance lays out the window again: the slowest thing an epoch report would do)
            epochs = training.params.get("max_epochs")
            self._progress = napari.utils.progress(total=epochs if isinstance(epochs, int) and epochs > 0 else None,
                                                   desc=f"scnapse {self.title}")
        _gui_first(True)
        # the worker starts at the next turn of the event loop, once the window has repainted
        QTimer.singleShot(0, worker.start)

    def _set_running(self, running: bool) -> None:
        for w in (self.inputs, self.options, self.train_options):
            if w is not None:
                w.enabled = not running
        self.save_button.setEnabled(not running)
        self.run_button.setEnabled(True)
        self.run_button.setText("Cancel" if running else self.run_text)

    def _on_report(self, report) -> None:
        if self._worker is None:  # a late report of a finished run
            return
        self._last_report = report
        if self.loss_plot is not None:
            self.loss_plot.add(report)
        val = "–" if report.val_loss is None else f"{report.val_loss:.4g}"
        self.status.setText(f"{self.title}: epoch {report.epoch}/{report.max_epochs}, "
                            f"train {report.train_loss:.4g}, validation {val}")
        # last: napari's progress bar may process pending events (the next reports, the end)
        if self._progress is None:
            self._progress = napari.utils.progress(total=report.max_epochs, desc=f"scnapse {self.title}")
        elif self._progress.total != report.max_epochs:
            self._progress.total = report.max_epochs
        self._progress.update(1)

    def _on_returned(self, outcome) -> None:
        self._run_stages([*self._done_stages(self._running_layer, *outcome), ("finish", self._on_finished, True)])

    def on_prepared(self, layer, adata, extra) -> None:
        """Keep the data made by ``prepare`` with ``layer`` (GUI thread)."""

    # -- the end of a run, in short steps ------------------------------------------------------------
    def _run_stages(self, stages: list[tuple]) -> None:
        """Run ``stages`` — ``(name, function, always)`` — one per turn of the event loop, so that
        napari repaints and answers between them (a single long callback would freeze the window).
        A stage that returns ``False``, or raises (the error is shown), drops the stages after it
        that are not ``always``. :attr:`end_slices` keeps ``(name, seconds, CPU seconds)`` of each."""
        self.end_slices = []
        self._stages = list(stages)
        self._next_stage()

    def then(self, name: str, func) -> None:
        """Run ``func()`` as the next stage of the end of a run (from :meth:`show_results`: e.g.
        show a layer added hidden, once napari has taken it in); outside a stage: now."""
        if not self._in_stage:
            func()
            return
        self._stages.insert(0, (name, func, False))

    def _next_stage(self) -> None:
        if not self._stages:
            return
        name, func, _always = self._stages.pop(0)
        start, cpu = time.perf_counter(), time.thread_time()
        self._in_stage = True
        try:
            ok = func()
        except Exception as err:  # a display problem must not lose the computed result
            self._error(err, trace=traceback.format_exc())
            ok = False
        finally:
            self._in_stage = False
            self.end_slices.append((name, time.perf_counter() - start, time.thread_time() - cpu))
        if ok is False:
            self._stages = [stage for stage in self._stages if stage[2]]
        if self._stages:
            self._stage_timer.start()

    def _done_stages(self, layer, done: list[Call], results: dict) -> list[tuple]:
        """Showing a finished run: record it, new features, the result layers, legend, scatter
        view, status line — each a stage of its own (see :meth:`_run_stages`)."""
        run = {"done": done, "results": dict(results)}

        def record():
            done, results = run["done"], run["results"]
            if PREPARED in results:
                self.on_prepared(layer, *results.pop(PREPARED))
            features = results.pop(FEATURES, None)
            self.prepared = results.pop(SHOWN, None)
            adata = layer.metadata[ADATA]
            session = layer.metadata[SESSION]
            cancelled = self._cancel.is_set()
            if cancelled and self._last_report is None and any(c.trains for c in self._calls):
                # cancelled before the first epoch: the data were put back; keep the layer, record nothing
                first = next((i for i, c in enumerate(done) if c.trains), len(done))
                done, results, features, self.prepared = done[:first], {}, None, None
                if not done:
                    self.results = {}
                    self.status.setText(f"{self.title}: cancelled before the first epoch — nothing changed.")
                    show_info(f"scnapse {self.title}: cancelled before the first epoch — nothing changed.")
                    return False
            self.results = results
            if self.loss_plot is not None and self._last_report is not None:
                self.loss_plot.set_cost(_resolved_cost(adata, self._calls, results) or self.loss_plot.cost)
                self.loss_plot.flush()  # the last epochs and the best-epoch mark, now rather than after the timer
            names = {key: session.add_model(key, model) for key, model in results.items()}
            trained_by = {}  # a model trained by a recorded step: the pipeline re-trains it (its step id)
            for call in done:
                if not call.record:
                    continue
                params = {k: (trained_by[v.name] if v.name in trained_by else ModelRef(names[v.name]))
                          if isinstance(v, ModelRef) else v for k, v in call.params.items()}
                if call.trains and cancelled and self._last_report is not None:
                    # what ran: the epochs completed before Cancel (re-running them gives the same model)
                    params["max_epochs"] = self._last_report.epoch
                session.record(call.name, params, call.step_id)
                if call.returns:
                    trained_by[call.returns] = session.steps[-1]["id"]
            run.update(done=done, adata=adata, cancelled=cancelled,
                       features=features[1] if features is not None and features[0] is adata else None)

        def features():
            refresh_features(self.viewer, run["adata"], run["features"])

        def show():
            if run["done"]:
                self.show_results(layer, run["done"])

        def legend():
            if run["done"]:
                self.legend.update_legend()

        def scatter():
            if run["done"]:
                refresh_scatter(self.viewer)  # an open scatter view shows the new results

        def status():
            what = "cancelled — the best model so far is kept" if run["cancelled"] else "done"
            summary = getattr(self, "_summary", None)
            epochs = self._epochs_line()
            if epochs:
                summary = f"{epochs} {summary}" if summary else epochs
            self.status.setText(f"{self.title}: {what}." + (f" {summary}" if summary else ""))
            show_info(f"scnapse {self.title}: {what}.")

        return [("record", record, False), ("features", features, False), ("show", show, False),
                ("legend", legend, False), ("scatter", scatter, False), ("status", status, False)]

    def _epochs_line(self) -> str:
        """"30 epochs, best 27; final loss train 0.41, validation 0.44" (empty without training)."""
        plot = self.loss_plot
        if plot is None or not plot.epochs:
            return ""
        import math

        val = [v for v in plot.val if not math.isnan(v)]
        line = f"{len(plot.epochs)} epochs"
        best = plot.best_epoch
        if best is None and val:
            best = plot.epochs[min(range(len(plot.val)), key=lambda i: math.inf if math.isnan(plot.val[i]) else plot.val[i])]
        if best == 0 and plot.start is not None:
            line += ", best epoch 0 (the start, before training)"
        elif best:
            line += f", best epoch {best}"
        line += f"; final loss: train {plot.train[-1]:.4g}"
        if val:
            line += f", validation {plot.val[-1]:.4g}"
        return line + "."

    def _on_errored(self, err: Exception) -> None:
        # steps that completed before the failing one did change the data: record them
        done, results = getattr(err, "__scnapse_done__", ([], {}))
        layer, results = self._running_layer, dict(results)
        stages = []
        if done:
            stages += self._done_stages(layer, done, results)
        elif PREPARED in results:
            stages.append(("prepared", lambda: self.on_prepared(layer, *results.pop(PREPARED)), True))
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        stages += [("error", lambda: self._error(err, trace=trace), True), ("finish", self._on_finished, True)]
        self._run_stages(stages)

    def _on_finished(self) -> None:
        self._worker = None
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()
        self._set_running(False)
        self._refresh_choices()

    def _error(self, err: Exception, trace: str | None = None) -> None:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        message = plain_error(message, self.field_labels())
        self.last_error = message
        import html

        self.status.setText(f"<span style='color:#d62728'>{self.title} failed: {html.escape(_clip(message))}</span>")
        from .._settings import logger

        if trace:
            logger.debug(trace)
        show_error(f"scnapse {self.title}: {message}")

    def field_labels(self) -> dict[str, str]:
        """Each field's name → its label (errors name the fields as the panel shows them)."""
        out = {}
        for part in (self.inputs, self.options, self.train_options):
            if part is not None:
                out.update({w.name: w.label for w in widgets_of(part) if w.name and w.label})
        return out

    # -- saving --------------------------------------------------------------------------------------
    def save_pipeline(self, path, *, script: bool = True) -> list[str]:
        """Write what was run on the selected cells, in order, as a pipeline YAML (and a ``.py``
        script beside it). Its output is ``<path>.h5ad``. Returns the files written."""
        from ..pipeline import export_script

        layer = self.layer
        get_adata(layer)
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml"):
            path = path.with_suffix(".yaml")
        session = layer.metadata[SESSION]
        if not session.steps:
            raise ValueError(f"Nothing that a pipeline can re-run was done on {layer.name!r} yet: run a step "
                             "first.")
        if session.input is None and session.initial is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            session.input = self.export_input(layer, session, path)
        pipe = session.to_pipeline(output=str(path.with_suffix(".h5ad")),
                                                   name=f"napari session on {layer.name}",
                                                   model_dir=path.parent / f"{path.stem}_models")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Exported from the scnapse napari plugin: re-run with `scnapse run "
                        f"{path.name}`.\n" + pipe.to_yaml())
        written = [str(path)]
        if script:
            py = path.with_suffix(".py")
            py.write_text(export_script(pipe))
            written.append(str(py))
        return written

    def export_input(self, layer, session, path: Path):
        """Write the input of cells made in napari beside the pipeline ``path``; returns the
        pipeline's ``input``. Here: the cells as they were first made, ``<name>_input.h5ad``."""
        from ..pipeline import write_h5ad_atomic

        initial = path.with_name(f"{path.stem}_input.h5ad")
        write_h5ad_atomic(session.initial, initial)
        return str(initial.resolve())

    def _on_save_clicked(self):
        try:
            get_adata(self.layer)
            path, _ = QFileDialog.getSaveFileName(self, "Save pipeline", "pipeline.yaml", "Pipeline (*.yaml *.yml)")
            if path:
                written = self.save_pipeline(path)
                show_info(f"scnapse: wrote {', '.join(written)}")
        except (ValueError, KeyError, OSError) as err:
            self._error(err)
