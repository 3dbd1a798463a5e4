"""The Compare runs panel: one training step run once per setting (optimizers, learning rates, L2
strengths…) with the same seed and split, through the registered step ``scnapse.tl.compare_runs``;
the loss curves overlaid (train and validation, one colour per run, with a legend), the final scores
side by side in a table, and each run's embedding as its own layer, next to each other."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, LineEdit, SpinBox
from qtpy.QtWidgets import QAbstractItemView, QLabel, QListWidget, QPushButton, QTableWidget, QTableWidgetItem

from ._layers import show_embedding
from ._options import LABELS_KEY, label_columns
from ._panel import Call, StepPanel

#: steps a comparison can train, as the panel names them → the name ``compare_runs`` takes
STEPS = {"autoencoder": "autoencoder", "cell classifier": "train_classifier"}
#: what the table shows first (the rest of the record's columns follow)
SCORES = ("final_val_loss", "best_val_loss", "final_train_loss", "best_epoch", "macro_f1", "accuracy",
          "knn_accuracy", "baseline", "baseline_method", "seconds")
#: ready-made comparisons: parameter → values (as typed in the values field)
PRESETS = {"optimizer": "sgd, momentum, rmsprop, adam", "lr": "log:1e-4..1e-1:4", "l2": "0, 1e-4, 1e-2"}


def _value(text: str):
    """One typed value: a whole number, a number (``1e-3`` too), true/false/none, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_list(text: str):
    """The values field: a sweep string kept as is (``"log:1e-5..1e-1"``) or comma-separated values,
    numbers read as numbers."""
    text = str(text).strip()
    if not text:
        raise ValueError("values: give two or more values, e.g. 'sgd, adam' or 'log:1e-4..1e-1:4'.")
    if text.startswith(("log:", "lin:")):
        return text
    values = [_value(v.strip()) for v in text.split(",") if v.strip()]
    if len(values) < 2:
        raise ValueError(f"values: {text!r} is one value; compare two or more (comma-separated).")
    return values


def parse_fixed(text: str) -> dict:
    """The fixed-options field: ``"n_latent: 8, pca_init: false"`` (YAML flow mapping, braces optional)."""
    import yaml

    text = str(text).strip()
    if not text:
        return {}
    try:
        value = yaml.safe_load(text if text.startswith("{") else "{" + text + "}")
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict) or any(v is None for v in value.values()):
        raise ValueError(f"fixed options: {text!r} is not 'name: value, name: value' (e.g. 'n_latent: 8').")
    return value


#: parameters that say how a run is carried out, not what it computes (never what a comparison varies)
_NOT_COMPARED = ("threads", "progress", "device", "key_added", "copy")


def vary_from_steps(steps: list[dict]) -> dict:
    """``compare_runs`` parameters re-making recorded runs of one training step side by side: the one
    option they differ in becomes ``vary``, the options they share ``fixed``."""
    if len(steps) < 2:
        raise ValueError("Pick two or more recorded runs of one training step to compare.")
    names = {s["step"] for s in steps}
    if len(names) != 1:
        raise ValueError(f"The picked runs are of different steps ({sorted(names)}); pick runs of one step.")
    name = names.pop().rsplit(".", 1)[-1]
    if name not in STEPS.values():
        raise ValueError(f"{name} is not a training step the panel compares ({sorted(STEPS.values())}).")
    params = [{k: v for k, v in s["params"].items() if k not in _NOT_COMPARED} for s in steps]
    keys = sorted(set().union(*params))
    missing = object()
    differ = [k for k in keys if len({repr(p.get(k, missing)) for p in params}) > 1]
    if not differ:
        raise ValueError("The picked runs have the same options: nothing to compare.")
    if len(differ) > 1:
        raise ValueError(f"The picked runs differ in several options ({differ}); pick runs that differ in one.")
    key = differ[0]
    if any(key not in p for p in params):
        raise ValueError(f"Some of the picked runs do not set {key!r}; set it in each to compare them.")
    fixed = {k: v for k, v in params[0].items() if k != key}
    seed = fixed.pop("seed", 0)
    labels_key = fixed.pop("labels_key", None)
    return {"vary": {key: [p[key] for p in params]}, "step": name, "fixed": fixed, "labels_key": labels_key,
            "seed": int(seed or 0), "key_added": "compare_runs"}


class CompareRunsWidget(StepPanel):
    """``scnapse.tl.compare_runs`` from napari: pick the step, the parameter to vary and its values."""

    title = "Compare runs"
    run_text = "Compare"
    trains = False

    def make_options(self):
        from magicgui.widgets import Container

        self.step = ComboBox(label="step", choices=list(STEPS), value="autoencoder",
                             tooltip="The training step run once per setting (same seed, same validation split).")
        self.vary = ComboBox(label="vary", choices=[*PRESETS, "other…"], value="optimizer",
                             tooltip="The parameter that differs between the runs.")
        self.other = LineEdit(label="parameter", value="", visible=False,
                              tooltip="Any training choice or option of the step (e.g. dropout, n_latent).")
        self.values = LineEdit(label="values", value=PRESETS["optimizer"],
                               tooltip="Comma-separated values, or a sweep: 'log:1e-5..1e-1' (5 log-spaced "
                                       "values), 'log:1e-5..1e-1:9', 'lin:0..0.5:6'.")
        self.max_epochs = SpinBox(label="epochs", value=30, min=1, max=100000,
                                  tooltip="max_epochs of every run.")
        self.labels_key = ComboBox(label="labels (obs)", choices=LABELS_KEY.choices(None), nullable=True,
                                   tooltip="Classes of the classifier; for an autoencoder, the labels its held-out "
                                           "15-NN accuracy is scored on (optional).")
        self.fixed = LineEdit(label="fixed options", value="",
                              tooltip="Options given unchanged to every run, e.g. 'n_latent: 8, pca_init: false'.")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1, tooltip="The seed of every run.")
        self.key_added = LineEdit(label="key added", value="compare_runs", tooltip="uns key of the record.")
        self.vary.changed.connect(self._on_vary)
        return Container(widgets=[self.step, self.vary, self.other, self.values, self.max_epochs, self.labels_key,
                                  self.fixed, self.seed, self.key_added], labels=True)

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        layout = self.scroll.widget().layout()
        self.runs = QListWidget()
        self.runs.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.runs.setMaximumHeight(90)
        self.runs.setToolTip("Training steps recorded for these cells: pick two or more that differ in one option.")
        self.compare_button = QPushButton("Compare picked runs")
        self.compare_button.setToolTip("Run the picked recorded runs again side by side (same seed and split).")
        self.compare_button.clicked.connect(
            lambda *_: self.compare_recorded([i.text().split(":", 1)[0] for i in self.runs.selectedItems()]))
        layout.insertWidget(layout.count() - 1, QLabel("<b>…or runs recorded for these cells</b>"))
        layout.insertWidget(layout.count() - 1, self.runs)
        layout.insertWidget(layout.count() - 1, self.compare_button)
        self.table = QTableWidget(0, 0)
        self.table.setMinimumHeight(140)
        layout.insertWidget(layout.count() - 1, QLabel("<b>Final scores</b>"))
        layout.insertWidget(layout.count() - 1, self.table)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.canvas = FigureCanvasQTAgg(Figure(figsize=(4, 3)))
        self.canvas.setMinimumHeight(440)
        layout.insertWidget(layout.count() - 1, self.canvas)
        self.figure = None
        self.embedding_layers: list = []
        self._list_runs()

    def _list_runs(self) -> None:
        from ._layers import SESSION

        if not hasattr(self, "runs"):
            return
        self.runs.clear()
        layer = self.cells.value
        session = None if layer is None else layer.metadata.get(SESSION)
        for sid in self.recorded_runs():
            step = session.steps[session.index(sid)]
            shown = ", ".join(f"{k}={v}" for k, v in step["params"].items() if k not in _NOT_COMPARED)
            self.runs.addItem(f"{sid}: {shown}")

    def _on_vary(self, *_):
        name = self.vary.value
        self.other.visible = name == "other…"
        if name in PRESETS:
            self.values.value = PRESETS[name]

    def on_cells_changed(self, adata) -> None:
        self._list_runs()
        current = self.labels_key.value
        self.labels_key.choices = label_columns(adata)
        if current in self.labels_key.choices:
            self.labels_key.value = current

    # -- running ------------------------------------------------------------------------------------
    def params(self) -> dict:
        """The ``compare_runs`` parameters the widgets say."""
        name = self.other.value.strip() if self.vary.value == "other…" else self.vary.value
        if not name:
            raise ValueError("parameter: name the option to vary (e.g. dropout).")
        fixed = parse_fixed(self.fixed.value)
        fixed.setdefault("max_epochs", int(self.max_epochs.value))
        return {"vary": {name: parse_list(self.values.value)}, "step": STEPS[self.step.value], "fixed": fixed,
                "labels_key": self.labels_key.value, "seed": int(self.seed.value),
                "key_added": self.key_added.value.strip() or "compare_runs"}

    def recorded_runs(self) -> list[str]:
        """Ids of the training steps recorded for the selected cells that the panel can compare."""
        from ._layers import SESSION

        layer = self.cells.value
        session = None if layer is None else layer.metadata.get(SESSION)
        if session is None:
            return []
        return [s["id"] for s in session.steps if s["step"].rsplit(".", 1)[-1] in STEPS.values()]

    def compare_recorded(self, ids: list[str]):
        """Run the recorded training steps ``ids`` again side by side (the option they differ in
        varied, the rest fixed); returns the worker, or ``None`` with the reason in the status."""
        from ._layers import SESSION

        try:
            session = self.cells.value.metadata[SESSION] if self.cells.value is not None else None
            if session is None:
                raise ValueError("cells: choose the cells layer whose recorded runs to compare.")
            steps = [session.steps[session.index(i)] for i in ids]
            self._recorded = vary_from_steps(steps)
        except (ValueError, KeyError, IndexError) as err:
            self._error(err)
            return None
        try:
            return self.run()
        finally:
            self._recorded = None

    def calls(self, adata) -> list[Call]:
        params = getattr(self, "_recorded", None) or self.params()
        if params["step"] == "train_classifier" and not params["labels_key"]:
            raise ValueError("labels (obs): a classifier comparison needs the obs column of the classes.")
        return [Call("scnapse.tl.compare_runs", params, step_id="compare_runs")]

    def show_results(self, layer, calls):
        from ._layers import get_adata

        key = calls[-1].params["key_added"]
        adata = get_adata(layer)
        rec = adata.uns[key]
        self.show_table(rec["table"])
        self.show_figure(adata, key)
        self.embedding_layers = self.show_embeddings(layer, rec.get("obsm_keys", []))
        best = rec["table"]["best_val_loss"].idxmin() if rec["table"]["best_val_loss"].notna().any() else None
        self._summary = f"{len(rec['table'])} runs; lowest validation loss: {best}."

    def show_table(self, table) -> None:
        """One row per run, the scores in columns (validation loss, macro-F1, baseline…)."""
        columns = [c for c in SCORES if c in table.columns]
        self.table.clear()
        self.table.setRowCount(len(table))
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setVerticalHeaderLabels([str(i) for i in table.index])
        for r, (_, row) in enumerate(table.iterrows()):
            for c, col in enumerate(columns):
                value = row[col]
                text = f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def show_figure(self, adata, key: str) -> None:
        """``sn.pl.compare_runs``' figure (curves overlaid with a legend, scores, embeddings) in the panel."""
        import matplotlib.pyplot as plt
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

        from ..pl import compare_runs

        fig = compare_runs(adata, key, show=False)
        plt.close(fig)
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumHeight(440)
        layout = self.scroll.widget().layout()
        layout.replaceWidget(self.canvas, canvas)
        self.canvas.setParent(None)
        self.canvas, self.figure = canvas, fig
        canvas.draw_idle()

    def show_embeddings(self, layer, keys, size: float = 100.0) -> list:
        """A Points layer per run's embedding, side by side: each scaled to the same ``size`` (an
        untrained run's embedding may be far smaller than a trained one's) and shifted right."""
        out, offset = [], 0.0
        for k in keys:
            target = show_embedding(self.viewer, layer, k)
            data = np.asarray(target.data, float)
            if len(data):
                lo, extent = data.min(axis=0), float(np.ptp(data, axis=0).max()) or 1.0
                f = size / extent
                target.scale = (f, f)
                target.translate = (-lo[0] * f, offset - lo[1] * f)
                offset += size * 1.15
            out.append(target)
        for target in out:  # all of them shown, next to each other
            target.visible = True
        if out:
            self.viewer.reset_view()
        return out
