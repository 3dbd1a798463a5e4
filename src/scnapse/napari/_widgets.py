"""The Autoencoder and Cell classifier panels (the Cells and Classic panels are in ``_cells`` and
``_classic``). Their options are generated from the steps they run (``scnapse.tl.autoencoder``,
``train_classifier``, ``annotate``); each panel says only which options pick from the data."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox

from ._cells import CellsWidget, legend_html
from ._classic import ClassicWidget, looks_like_counts
from ._layers import (
    ModelRef, focus_layer, get_adata, is_adata_layer, prepare_embedding, recolor, show_embedding,
)
from ._options import BATCH_KEY, LABELS_KEY, LAYER, X_CHOICE, Option, Picker, StepOptions, form, label_columns
from ._panel import Call, StepPanel

__all__ = ["AutoencoderWidget", "CellClassifierWidget", "CellsWidget", "ClassicWidget", "X_CHOICE", "legend_html",
           "looks_like_counts"]

#: the Autoencoder panel's model choice → ``variational=``
VARIATIONAL = {"auto": None, "autoencoder": False, "variational (VAE)": True}


class AutoencoderWidget(StepPanel):
    """``scnapse.tl.autoencoder``: every option of the step, and every training choice."""

    title = "Autoencoder"
    run_text = "Train"
    n_latent, hidden, pca_init, variational, beta, key_added = (Option() for _ in range(6))
    layer_choice = Option("layer")

    def make_options(self):
        from ..models.autoencoder import AE_COSTS
        from ..tl import autoencoder

        self.train_costs = AE_COSTS
        opts = StepOptions(autoencoder, pickers={"layer": LAYER, "batch_key": BATCH_KEY}, choices={"variational": list(VARIATIONAL.items())},
                           labels={"variational": "model"},
                           tooltips={"variational": "auto: a VAE for the count costs (nb, poisson; the natural cost "
                                                    "for raw counts is nb), an autoencoder otherwise.",
                                     "key_added": "obsm key of the embedding; empty: X_autoencoder."})
        self.option_sets, self.train_steps = {None: [opts]}, {None: autoencoder}
        opts.widget("variational").changed.connect(self.on_task_changed)
        self.on_task_changed()
        return form(opts)

    def on_task_changed(self, *_):
        self.beta.visible = self.variational.value is not False

    def calls(self, adata) -> list[Call]:
        (opts,) = self.step_options()
        params = {**opts.values(), **self.train_options.values()}
        return [Call("scnapse.tl.autoencoder", params, trains=True, step_id="autoencoder")]

    def result_key(self) -> str:
        return self.key_added.value.strip() or "X_autoencoder"

    def result_preparer(self, layer, calls):
        make = prepare_embedding(layer, self.result_key())  # the embedding's layer, made in the worker
        return lambda adata, features: make(features)

    def show_results(self, layer, calls):
        # added hidden, shown at the next turn of the event loop: two short pauses, not one long one
        self.result_layer = show_embedding(self.viewer, layer, self.result_key(), prepared=self.prepared,
                                           focus=False)
        self.then("focus", lambda: focus_layer(self.viewer, self.result_layer))


TRAIN_NEW = "train on a labelled column"
LOAD_SAVED = "load a saved model"
#: ``obs`` columns to vote over (``annotate``'s ``over_clustering``), or none
CLUSTERS = Picker(lambda adata: [("none", None)] + [(c, c) for c in label_columns(adata)])


class CellClassifierWidget(StepPanel):
    """``scnapse.tl.train_classifier`` on a labelled ``obs`` column (or a saved model), then
    ``scnapse.tl.annotate``: predicted class and confidence per cell, the points coloured by class."""

    title = "Cell classifier"
    train_costs = ("cross_entropy",)
    labels_key, hidden, key_added, min_confidence, min_typicality = (Option() for _ in range(5))
    class_balance, class_weight = Option(), Option()

    def make_options(self):
        from magicgui.widgets import FileEdit

        from ..tl import annotate, train_classifier

        self.mode = ComboBox(label="model", choices=[TRAIN_NEW, LOAD_SAVED], value=TRAIN_NEW)
        self.model_path = FileEdit(label="model folder", mode="d",
                                   tooltip="A folder written by CellClassifier.save (or by 'Save pipeline…').")
        # the data layer is annotate's and is given to both steps; uns[key_added] of training keeps its name
        train = StepOptions(train_classifier, hide=("layer", "key_added"),
                            pickers={"labels_key": LABELS_KEY, "batch_key": BATCH_KEY},
                            tooltips={"hidden": "Widths; empty = logistic regression."})
        predict = StepOptions(annotate, pickers={"layer": LAYER, "over_clustering": CLUSTERS, "batch_key": BATCH_KEY})
        self.option_sets = {TRAIN_NEW: [train, predict], LOAD_SAVED: [predict]}
        self.train_steps = {None: train_classifier}
        self.mode.changed.connect(self.show_task)
        return form(self.mode, train, self.model_path, predict)

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.show_task()

    def current_task(self):
        return self.mode.value

    def on_task_changed(self):
        training = self.mode.value == TRAIN_NEW
        self.model_path.visible = not training
        if self.train_options is not None:
            self.train_options.visible = training

    @property
    def run_text(self):  # the Run button says what it does
        return "Train + annotate" if getattr(self, "mode", None) is None or self.mode.value == TRAIN_NEW else "Annotate"

    def calls(self, adata) -> list[Call]:
        from .. import tl

        *train, predict = self.step_options()
        annotate = predict.values()
        if self.mode.value == LOAD_SAVED:
            path = str(self.model_path.value or "").strip()
            if not path or path == ".":
                raise ValueError("model folder: choose the folder of a saved CellClassifier.")
            return [Call("scnapse.tl.annotate", {"model": path, **annotate})]
        params = {**train[0].values(), "layer": annotate["layer"], **self.train_options.values()}
        if not params["labels_key"]:
            raise ValueError("labels (obs): choose the obs column with the cell types to learn.")
        # recorded: the saved pipeline re-trains the classifier, then annotates with it
        return [Call("scnapse.tl.train_classifier", params, trains=True, func=tl.train_classifier,
                     returns="classifier", step_id="classifier"),
                Call("scnapse.tl.annotate", {"model": ModelRef("classifier"), **annotate})]

    def show_results(self, layer, calls):
        key = calls[-1].params["key_added"] or "predicted"
        adata = get_adata(layer)
        shown = [x for x in self.viewer.layers if is_adata_layer(x) and get_adata(x) is adata and x.visible]
        for target in shown or [layer]:
            recolor(target, key)
        self.result_layer = (shown or [layer])[-1]
        conf = adata.obs[f"{key}_confidence"].to_numpy(dtype=float)
        n_un = int((adata.obs[key].astype(str) == "Unassigned").sum())
        text = f"{adata.n_obs} cells annotated, mean confidence {np.nanmean(conf):.2f}, {n_un} unassigned"
        metrics = adata.uns.get("classifier", {}).get("metrics", {}) if self.mode.value == TRAIN_NEW else {}
        acc, f1 = metrics.get("accuracy"), metrics.get("macro_f1")
        if acc is not None:
            text += f"; held-out accuracy {float(acc):.2f}" + (f", macro-F1 {float(f1):.2f}" if f1 is not None else "")
        self._summary = text + "."
