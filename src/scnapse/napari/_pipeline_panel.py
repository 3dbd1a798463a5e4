"""The Pipeline panel: the steps recorded for a cells layer (or read from a pipeline file), their
parameters and status; edit a step in the same generated widgets as the step panels, re-run from
it in a worker (later steps follow, progress per step, cancel), drop a step, undo.

The re-run is :func:`scnapse.pipeline.replay.rerun_from`: the registered steps, the pipeline's
seed and device, the runner of ``scnapse run``: a session edited here and saved re-runs to the
same numbers.
"""

from __future__ import annotations

import threading
import traceback

import napari
from magicgui.widgets import ComboBox, Container
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget

from ..pipeline.replay import Cancelled, Snapshots, check, rerun_from
from ._events import _connect_layer_events, adata_points_layers, refresh_cells_choice
from ._layers import ADATA, SESSION, VIEW, adata_layer_data, show_embedding
from ._lossplot import LossPlot

#: the open Pipeline panel of each viewer (the pipeline-file reader shows its steps there)
_PANELS: dict[int, PipelineWidget] = {}


class _Relay(QObject):
    step = Signal(object)
    report = Signal(object)
    done = Signal(object)
    failed = Signal(object)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def describe(step: dict, status: dict | None) -> str:
    """One line of the step list: ``N. name(params) — status``."""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in step["params"].items())
    status = status or {}
    state = status.get("state", "ran")
    if status.get("seconds") is not None and state in ("ran", "replayed"):
        state += f", took {status['seconds']:.1f} s"
    if state == "failed" and status.get("message"):
        state += f": {status['message'][:120]}"
    return f"{step['id']}: {step['step']}({params}) — {state}"


class PipelineWidget(QWidget):
    """``Plugins ▸ scnapse ▸ Pipeline``: see, edit and re-run the steps of the selected cells."""

    title = "Pipeline"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        _PANELS[_key(napari_viewer)] = self
        self.file_session = None  # a pipeline file's steps (File ▸ Open), run on its own input
        self._snapshots: dict[int, Snapshots] = {}
        self._worker = None
        self._cancel = threading.Event()
        self.last_error: str | None = None
        self.result_layers: list = []
        self.setMinimumWidth(340)

        layout = QVBoxLayout(self)
        self.cells = ComboBox(label="cells", choices=lambda *_: adata_points_layers(self.viewer), nullable=True,
                              tooltip="The cells layer whose recorded steps are shown.")
        self.cells.changed.connect(self.refresh)
        self.inputs = Container(widgets=[self.cells], labels=True)
        layout.addWidget(self.inputs.native)
        self.source = QLabel("")
        self.source.setWordWrap(True)
        layout.addWidget(self.source)
        self.steps = QListWidget()
        self.steps.setMinimumHeight(140)
        self.steps.currentRowChanged.connect(self._on_select)
        layout.addWidget(self.steps)
        self.editor_box = QVBoxLayout()
        layout.addLayout(self.editor_box)
        self.editor = None
        row = QHBoxLayout()
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Keep the edited parameters (the step and later ones become 'changed since').")
        self.apply_button.clicked.connect(self._guard(self.apply_edit))
        self.run_button = QPushButton("Re-run from here")
        self.run_button.setToolTip("Re-run the selected step and every later one (Cancel stops).")
        self.run_button.clicked.connect(self._on_run_clicked)
        row.addWidget(self.apply_button)
        row.addWidget(self.run_button)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.drop_button = QPushButton("Drop step")
        self.drop_button.clicked.connect(self._guard(self.drop_selected))
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self._guard(self.undo))
        row.addWidget(self.drop_button)
        row.addWidget(self.undo_button)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.up_button = QPushButton("Move up")
        self.up_button.setToolTip("Run the selected step one place earlier (refused when it needs that step's output).")
        self.up_button.clicked.connect(self._guard(lambda: self.move_selected(-1)))
        self.down_button = QPushButton("Move down")
        self.down_button.setToolTip("Run the selected step one place later (refused when the next step needs its "
                                    "output).")
        self.down_button.clicked.connect(self._guard(lambda: self.move_selected(+1)))
        row.addWidget(self.up_button)
        row.addWidget(self.down_button)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.loss_plot = LossPlot()
        layout.addWidget(self.loss_plot)
        layout.addStretch(1)

        self._relay = _Relay()
        self._relay.step.connect(self._on_step)
        self._relay.report.connect(self.loss_plot.add)
        self._relay.done.connect(self._on_done)
        self._relay.failed.connect(self._on_failed)
        _connect_layer_events(self, self._refresh_choices)
        self._refresh_choices()

    # -- what is shown ------------------------------------------------------------------------------
    @property
    def session(self):
        if self.file_session is not None:
            return self.file_session
        layer = self.cells.value
        return None if layer is None else layer.metadata.get(SESSION)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _refresh_choices(self, *_):
        if self._worker is None:
            refresh_cells_choice(self.cells, self.viewer)
            self.refresh()

    def show_pipeline(self, session) -> None:
        """Show a pipeline file's steps (``Run`` executes it on its own input)."""
        self.file_session = session
        self.refresh()

    def refresh(self, *_) -> None:
        """Re-read the steps and their status."""
        session = self.session
        row = self.steps.currentRow()
        self.steps.blockSignals(True)
        self.steps.clear()
        if session is not None:
            for s in session.steps:
                self.steps.addItem(describe(s, session.status.get(s["id"])))
        self.steps.blockSignals(False)
        if self.file_session is not None:
            self.source.setText(f"pipeline file: {getattr(self.file_session, 'source', None)} "
                                f"(input: {self.file_session.input})")
        elif session is not None:
            self.source.setText(f"input: {session.input if session.input is not None else 'cells made in napari'}")
        else:
            self.source.setText("No cells: open an .h5ad, a sample or a pipeline file.")
        n = self.steps.count()
        if n:
            self.steps.setCurrentRow(min(max(row, 0), n - 1))
        else:
            self._set_editor(None)
        self.undo_button.setEnabled(bool(session is not None and session.can_undo))

    # -- editing ------------------------------------------------------------------------------------
    def select(self, index: int) -> None:
        self.steps.setCurrentRow(index)

    def _on_select(self, row: int) -> None:
        session = self.session
        if session is None or not 0 <= row < len(session.steps):
            self._set_editor(None)
            return
        self._set_editor(session.steps[row])

    def _set_editor(self, step: dict | None) -> None:
        from ..pipeline import get_step
        from ._options import StepOptions, family_train_defaults
        from ._train_options import TrainOptions

        if self.editor is not None:
            self.editor_box.removeWidget(self.editor.native)
            self.editor.native.setParent(None)
        self.editor, self._step_opts, self._train_opts, self._initial = None, None, None, {}
        if step is None:
            return
        spec = get_step(step["step"])
        params = step["params"]
        parts = []
        try:
            opts = StepOptions(spec.func)
            opts.set_values(**{k: v for k, v in params.items() if k in opts})
            self._step_opts = opts
            parts += list(opts.widgets.values())
        except Exception:  # noqa: BLE001 - a step whose options have no widgets: shown as text only
            self._step_opts = None
        if spec.trains:
            train = TrainOptions(defaults=family_train_defaults(spec.func))
            train.set_values(**{k: v for k, v in params.items() if k in train._fields})
            self._train_opts = train
        self.editor = Container(widgets=parts, labels=True)
        if self._train_opts is not None:
            self.editor.append(self._train_opts)
        self.editor_box.addWidget(self.editor.native)
        self._initial = self._edited_values()

    def _edited_values(self) -> dict:
        out = {}
        if self._step_opts is not None:
            out.update(self._step_opts.values())
        if self._train_opts is not None:
            out.update(self._train_opts.values())
        return out

    def widget(self, name: str):
        """The editor's widget of parameter ``name`` (of the selected step)."""
        if self._step_opts is not None and name in self._step_opts:
            return self._step_opts.widget(name)
        return self._train_opts.widget(name)

    def apply_edit(self) -> dict:
        """Keep the editor's changed values as the selected step's parameters; returns them."""
        session, row = self.session, self.steps.currentRow()
        if session is None or row < 0:
            raise ValueError("Select a step first.")
        values = self._edited_values()
        params = dict(session.steps[row]["params"])
        params.update({k: v for k, v in values.items() if self._initial.get(k, object()) != v})
        if params != session.steps[row]["params"]:
            session.set_params(row, params)
        self.refresh()
        return params

    def drop_selected(self) -> None:
        session, row = self.session, self.steps.currentRow()
        if session is None or row < 0:
            raise ValueError("Select a step first.")
        session.drop(row)
        self.refresh()

    def move_selected(self, by: int) -> None:
        """Move the selected step ``by`` places (-1 up, +1 down); the selection follows it."""
        session, row = self.session, self.steps.currentRow()
        if session is None or row < 0:
            raise ValueError("Select a step first.")
        to = row + by
        if not 0 <= to < len(session.steps):
            raise ValueError(f"Step {session.steps[row]['id']!r} is already the {'first' if by < 0 else 'last'}.")
        session.move(row, to)
        self.status.setText("")
        self.refresh()
        self.select(to)

    def undo(self) -> None:
        session = self.session
        if session is None or not session.undo():
            raise ValueError("Nothing to undo.")
        self.refresh()

    def _guard(self, action):
        def run(*_):
            try:
                action()
            except (ValueError, KeyError, IndexError) as err:
                self._error(err)
        return run

    # -- running ------------------------------------------------------------------------------------
    def _on_run_clicked(self):
        if self._worker is not None:
            self.cancel()
        else:
            self.run_from(max(self.steps.currentRow(), 0))

    def run_from(self, index: int = 0):
        """Re-run from step ``index`` (later steps follow) in a worker; returns it, or ``None`` when
        the steps fail their checks (the status names the step and the problem; nothing ran)."""
        if self._worker is not None:
            return None
        session = self.session
        try:
            if session is None:
                raise ValueError("No steps: select a cells layer or open a pipeline file.")
            check(session)
        except Exception as err:  # noqa: BLE001 - every check's message to the panel
            self._error(err)
            return None
        layer = None if self.file_session is not None else self.cells.value
        snaps = self._snapshots.setdefault(id(session), Snapshots())
        if self.file_session is not None and self.cells.value is not None:
            target = self.cells.value
            missing = missing_inputs(session, target.metadata[ADATA])
            if not missing:  # the file's steps after the cells' own, on the cells as they are
                session, index, snaps = on_cells(session, target)
                layer = target
            else:
                self.status.setText(f"{target.name!r} lacks {missing[0]!r}: running the file on its own input.")
        self._cancel = threading.Event()
        self._running = (session, layer, index)
        self.last_error = None
        self.loss_plot.reset()
        self._progress = napari.utils.progress(total=len(session.steps) - index, desc="scnapse pipeline")
        self.run_button.setText("Cancel")
        for w in (self.apply_button, self.drop_button, self.undo_button, self.up_button, self.down_button):
            w.setEnabled(False)
        relay = self._relay

        def body():
            try:
                out = rerun_from(session, index, snapshots=snaps, cancel=self._cancel,
                                 on_step=lambda *a: relay.step.emit(a), callback=relay.report.emit)
            except Exception as err:  # noqa: BLE001 - to the GUI thread
                relay.failed.emit(err)
            else:
                relay.done.emit(out)

        self._worker = create_worker(body, _start_thread=False, _ignore_errors=True)
        self._worker.start()
        return self._worker

    def cancel(self) -> None:
        if self._worker is not None:
            self._cancel.set()
            self.run_button.setText("Cancelling…")

    def _on_step(self, args) -> None:
        i, state, seconds, message = args
        session = self._running[0]
        if i < len(session.steps):
            sid = session.steps[i]["id"]
            session.status[sid] = {"state": state, "seconds": round(seconds, 2), "message": message}
            if state in ("ran", "replayed") and i >= self._running[2] and self._progress is not None:
                self._progress.update(1)
            if state == "running":
                self.loss_plot.reset()
                self.status.setText(f"step {i + 1}/{len(session.steps)}: {session.steps[i]['step']}…")
        self.refresh()

    def _on_done(self, adata) -> None:
        session, layer, _ = self._running
        try:
            self._show(adata, session, layer)
            self.status.setText("Pipeline: done.")
            show_info("scnapse Pipeline: done.")
        except Exception as err:  # noqa: BLE001 - a display problem must not look like a lost run
            self._error(err, trace=traceback.format_exc())
        finally:
            self._finish()

    def _on_failed(self, err) -> None:
        try:
            if isinstance(err, Cancelled):
                self.status.setText(f"Pipeline: {err}; the cells are as they were.")
                show_info("scnapse Pipeline: cancelled.")
            else:
                self._error(err, trace="".join(traceback.format_exception(type(err), err, err.__traceback__)))
        finally:
            self._finish()

    def _finish(self) -> None:
        self._worker = None
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()
        self.run_button.setText("Re-run from here")
        for w in (self.apply_button, self.drop_button, self.up_button, self.down_button):
            w.setEnabled(True)
        self.refresh()

    def _show(self, adata, session, layer) -> None:
        """The result in the viewer: the layers of the old data now show the new data; embeddings
        the run wrote get their layers (as a panel run adds them)."""
        self.result_layers = []
        trained = [v.get("obsm_key") for v in adata.uns.values() if isinstance(v, dict) and v.get("obsm_key")]
        if layer is not None and self.file_session is not None:  # a file's steps run on the selected cells
            self.file_session = None
        if layer is None:  # a pipeline file run on its own input
            from ..pipeline.session import Session  # noqa: F401 - the file's session goes with the layer

            name = str(getattr(session, "source", None) or "pipeline").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            data, kwargs, _ = adata_layer_data(adata, session=session, name=f"{name} (cells)")
            layer = self.viewer.add_points(data, **kwargs)
            self.result_layers.append(layer)
            self.file_session = None
            self.cells.reset_choices()
            self.cells.value = layer
        else:
            old = layer.metadata[ADATA]
            for other in list(self.viewer.layers):
                if other.metadata.get(ADATA) is old:
                    view = other.metadata.get(VIEW, {})
                    key = view.get("obsm_key")
                    color = view.get("color_by")
                    data, kwargs, _ = adata_layer_data(
                        adata, obsm_key=key if key in adata.obsm else "auto",
                        color_by=color if color in adata.obs else "auto", session=session, name=other.name)
                    other.metadata.update(kwargs["metadata"])
                    other.data = data
                    other.features = kwargs["features"]
                    other.face_color = kwargs["face_color"]
                    other.refresh()
        for key in trained:
            if key in adata.obsm and adata.obsm[key].ndim == 2 and adata.obsm[key].shape[1] >= 2:
                self.result_layers.append(show_embedding(self.viewer, layer, key))

    def _error(self, err: Exception, trace: str | None = None) -> None:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        self.last_error = message
        self.status.setText(f"<span style='color:#d62728'>Pipeline failed: {message}</span>")
        if trace:
            from .._settings import logger

            logger.debug(trace)
        show_error(f"scnapse Pipeline: {message}")


def missing_inputs(session, adata) -> list[str]:
    """What the steps of ``session`` read that neither an earlier step writes nor ``adata`` holds
    (empty: the steps can run on ``adata``)."""
    from ..pipeline.session import step_reads, step_writes

    have = set(adata.obsm.keys()) | set(adata.obs.columns) | set(adata.obsp.keys()) | set(adata.uns.keys()) \
        | set(adata.layers.keys()) | set(session.models)
    missing = []
    for s in session.steps:
        for key in sorted(step_reads(s) - have):
            if "/" in key or key.endswith((".h5ad", ".json")):  # a saved model's folder, not a key
                continue
            if key == "neighbors" and "connectivities" in adata.obsp:
                continue
            missing.append(key)
        have |= step_writes(s)
    return missing


def on_cells(file_session, layer):
    """``(session, start, snapshots)``: the cells' own steps followed by a pipeline file's, to run from
    the first of the file's on the cells' data as they are now."""
    import copy

    from ..pipeline.session import Session

    own = layer.metadata.get(SESSION) or Session()
    session = Session(input=own.input, seed=own.seed, models=dict(own.models), initial=own.initial)
    session.steps = copy.deepcopy(own.steps)
    session.status = copy.deepcopy(own.status)
    for s in file_session.steps:
        session.record(s["step"], s["params"], s["id"])
        session.status[session.steps[-1]["id"]] = {"state": "not run"}
    start = len(own.steps)
    snaps = Snapshots()
    if start:
        snaps.steps = [dict(s) for s in session.steps]
        snaps.after[start - 1] = layer.metadata[ADATA]
        snaps.models[start - 1] = dict(own.models)
    return session, start, snaps


def _key(viewer) -> int:
    """The viewer's identity (npe2 hands widgets a proxy of it)."""
    return id(getattr(viewer, "__wrapped__", viewer))


def panel_for(viewer) -> PipelineWidget:
    """The viewer's Pipeline panel, docked if it is not open yet."""
    panel = _PANELS.get(_key(viewer))
    if panel is None:
        try:
            _, panel = viewer.window.add_plugin_dock_widget("scnapse", "Pipeline")
        except Exception:  # noqa: BLE001 - e.g. the manifest is not installed: dock it directly
            panel = PipelineWidget(viewer)
            viewer.window.add_dock_widget(panel, name="Pipeline", area="right")
    return panel
