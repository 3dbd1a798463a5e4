"""The dock widgets: Cells (embedding, colours, legend), Classic (PCA / t-SNE / UMAP), Autoencoder."""

from __future__ import annotations

import html

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ._layers import VIEW, embedding_keys, get_adata, is_adata_layer, recolor, show_embedding
from ._panel import Call, StepPanel, _connect_layer_events, adata_points_layers, refresh_cells_choice
from ._train_options import TrainOptions

X_CHOICE = "X (adata.X)"
#: the Autoencoder panel's model choice → ``variational=``
VARIATIONAL = {"auto": None, "autoencoder": False, "variational (VAE)": True}


def legend_html(legend: dict[str, str], column: str | None) -> str:
    if not legend:
        return "<i>no colouring</i>"
    rows = "".join(
        f"<tr><td style='background:{c}; width:14px'>&nbsp;</td><td>&nbsp;{html.escape(str(k))}</td></tr>"
        for k, c in legend.items()
    )
    return f"<b>{html.escape(str(column))}</b><table cellspacing='2'>{rows}</table>"


def looks_like_counts(adata) -> bool:
    """Raw counts (as scnapse's preprocessing decides): non-negative integers reaching above 30."""
    from ..models._preprocess import looks_like_counts as _check
    from ..train.data import summarize

    try:
        return bool(_check(summarize(adata.X)))
    except Exception:
        return False


def _defaults(func) -> dict:
    import inspect

    return {n: p.default for n, p in inspect.signature(func).parameters.items() if p.default is not p.empty}


class CellsWidget(QWidget):
    """Which embedding of the AnnData the Points layer shows, which ``obs`` column colours it, and
    the legend of that colouring."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.cells = ComboBox(label="cells", choices=self._adata_layers, nullable=True)
        self.embedding = ComboBox(label="embedding (obsm)", choices=[])
        self.dims = LineEdit(label="dimensions", value="0, 1", tooltip="Which two embedding columns to draw.")
        self.color_by = ComboBox(label="colour by (obs)", choices=[], nullable=True)
        self.form = Container(widgets=[self.cells, self.embedding, self.dims, self.color_by], labels=True)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.legend)
        layout.addStretch(1)
        self._updating = False
        self.cells.changed.connect(self._on_cells)
        self.embedding.changed.connect(self._on_embedding)
        self.dims.changed.connect(self._on_embedding)
        self.color_by.changed.connect(self._on_color)
        _connect_layer_events(self, self._refresh)
        self._refresh()

    def _adata_layers(self, *_):
        return adata_points_layers(self.viewer)

    def _refresh(self, *_):
        refresh_cells_choice(self.cells, self.viewer)
        self._on_cells()

    def _on_cells(self, *_):
        layer = self.cells.value
        self._updating = True
        try:
            if layer is None:
                self.embedding.choices, self.color_by.choices = [], []
                self.legend.setText("")
                return
            adata = get_adata(layer)
            view = layer.metadata.get(VIEW, {})
            self.embedding.choices = embedding_keys(adata)
            if view.get("obsm_key") in self.embedding.choices:
                self.embedding.value = view["obsm_key"]
            self.color_by.choices = list(adata.obs.columns)
            self.color_by.value = view.get("color_by") if view.get("color_by") in adata.obs else None
            self.legend.setText(legend_html(view.get("legend", {}), view.get("color_by")))
        finally:
            self._updating = False

    def _on_embedding(self, *_):
        if self._updating or self.cells.value is None or not self.embedding.value:
            return
        try:
            dims = tuple(int(d) for d in str(self.dims.value).replace(",", " ").split())
            if len(dims) != 2:
                raise ValueError("dimensions: give two column numbers, e.g. '0, 1'.")
            layer = show_embedding(self.viewer, self.cells.value, self.embedding.value, dims=dims)
        except (ValueError, KeyError, IndexError) as err:
            from napari.utils.notifications import show_error

            show_error(f"scnapse: {err}")
            return
        self.cells.value = layer

    def _on_color(self, *_):
        if self._updating or self.cells.value is None:
            return
        legend = recolor(self.cells.value, self.color_by.value)
        self.legend.setText(legend_html(legend, self.color_by.value))


class ClassicWidget(StepPanel):
    """PCA, t-SNE or UMAP with scanpy (log-normalising raw counts first, if asked)."""

    title = "Classic"
    trains = False

    def make_options(self):
        self.method = ComboBox(label="method", choices=["pca", "tsne", "umap"], value="umap")
        self.normalize = CheckBox(label="normalise + log1p counts first", value=True,
                                  tooltip="scanpy.pp.normalize_total (10,000 per cell) and scanpy.pp.log1p; "
                                          "applied only to raw counts, once.")
        self.n_comps = SpinBox(label="PCA components", value=30, min=2, max=500)
        self.n_neighbors = SpinBox(label="neighbours (UMAP)", value=15, min=2, max=500)
        self.perplexity = FloatSpinBox(label="perplexity (t-SNE)", value=30.0, min=2.0, max=200.0)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.method.changed.connect(self._visibility)
        self._visibility()
        return Container(widgets=[self.method, self.normalize, self.n_comps, self.n_neighbors, self.perplexity,
                                  self.seed], labels=True)

    def _visibility(self, *_):
        self.n_neighbors.visible = self.method.value == "umap"
        self.perplexity.visible = self.method.value == "tsne"

    def on_cells_changed(self, adata):
        if adata is not None:
            self.normalize.value = looks_like_counts(adata) and "log1p" not in adata.uns

    def calls(self, adata) -> list[Call]:
        seed = int(self.seed.value)
        n_comps = int(min(self.n_comps.value, adata.n_obs - 1, adata.n_vars - 1))
        if n_comps < 2:
            raise ValueError(f"PCA needs at least 3 cells and 3 genes; these data have {adata.n_obs} × {adata.n_vars}.")
        out = []
        if self.normalize.value and "log1p" not in adata.uns:
            out += [Call("scanpy.pp.normalize_total", {"target_sum": 10000.0}), Call("scanpy.pp.log1p")]
        out.append(Call("scanpy.pp.pca", {"n_comps": n_comps, "random_state": seed}))
        if self.method.value == "umap":
            out += [Call("scanpy.pp.neighbors", {"use_rep": "X_pca", "n_neighbors": int(self.n_neighbors.value),
                                                 "random_state": seed}),
                    Call("scanpy.tl.umap", {"random_state": seed})]
        elif self.method.value == "tsne":
            perplexity = float(self.perplexity.value)
            if 3 * perplexity >= adata.n_obs:
                raise ValueError(f"perplexity={perplexity:g} is too large for {adata.n_obs} cells; "
                                 f"use less than {adata.n_obs / 3:.0f}.")
            out.append(Call("scanpy.tl.tsne", {"use_rep": "X_pca", "perplexity": perplexity,
                                               "random_state": seed}))
        return out

    def show_results(self, layer, calls):
        key = {"pca": "X_pca", "tsne": "X_tsne", "umap": "X_umap"}[self.method.value]
        self.result_layer = show_embedding(self.viewer, layer, key)


class AutoencoderWidget(StepPanel):
    """``scnapse.tl.autoencoder``: architecture, cost and every training choice."""

    title = "Autoencoder"
    run_text = "Train"

    def make_options(self):
        from ..tl import autoencoder

        defaults = _defaults(autoencoder)  # the step's own defaults: one source of truth
        self.n_latent = SpinBox(label="latent size", value=int(defaults["n_latent"]), min=2, max=1024)
        self.hidden = LineEdit(label="hidden layers", value=", ".join(str(h) for h in defaults["hidden"]),
                               tooltip="Widths, e.g. '256, 64'.")
        self.pca_init = CheckBox(label="start from PCA", value=bool(defaults["pca_init"]),
                                 tooltip="Linear paths set to the principal components; the nonlinear "
                                         "layers learn what PCA misses. Off: a plain MLP autoencoder.")
        self.variational = ComboBox(label="model", choices=list(VARIATIONAL), value="auto",
                                    tooltip="auto: a VAE for the count costs (nb, poisson; the natural "
                                            "cost for raw counts is nb), an autoencoder otherwise.")
        self.beta = FloatSpinBox(label="β (VAE KL weight)", value=1.0, min=0.0, max=100.0, step=0.1)
        self.layer_choice = ComboBox(label="data", choices=[X_CHOICE], value=X_CHOICE,
                                     tooltip="adata.X or one of adata.layers")
        self.key_added = LineEdit(label="key added", value="X_autoencoder")
        self.variational.changed.connect(lambda v: setattr(self.beta, "visible", v != "autoencoder"))
        return Container(widgets=[self.n_latent, self.hidden, self.pca_init, self.variational, self.beta,
                                  self.layer_choice,
                                  self.key_added], labels=True)

    def make_train_options(self):
        from ..models.autoencoder import AE_COSTS

        return TrainOptions(costs=AE_COSTS)

    def on_cells_changed(self, adata):
        choices = [X_CHOICE] + (list(adata.layers.keys()) if adata is not None else [])
        current = self.layer_choice.value
        self.layer_choice.choices = choices
        self.layer_choice.value = current if current in choices else X_CHOICE

    def hidden_sizes(self) -> list[int]:
        text = str(self.hidden.value).replace(",", " ").split()
        try:
            sizes = [int(t) for t in text]
        except ValueError:
            raise ValueError(f"hidden layers: {self.hidden.value!r} must be whole numbers, e.g. '256, 64'.") from None
        if any(s < 1 for s in sizes):
            raise ValueError("hidden layers: every width must be at least 1.")
        return sizes

    def calls(self, adata) -> list[Call]:
        params = {"n_latent": int(self.n_latent.value), "hidden": self.hidden_sizes()}
        if not self.pca_init.value:
            params["pca_init"] = False
        variational = VARIATIONAL[self.variational.value]
        if variational is not None:
            params["variational"] = variational
        if variational is not False and float(self.beta.value) != 1.0:
            params["beta"] = float(self.beta.value)
        if self.layer_choice.value != X_CHOICE:
            params["layer"] = self.layer_choice.value
        key = str(self.key_added.value).strip()
        if key and key != "X_autoencoder":
            params["key_added"] = key
        params.update(self.train_options.values())
        return [Call("scnapse.tl.autoencoder", params, trains=True, step_id="autoencoder")]

    def result_key(self) -> str:
        return str(self.key_added.value).strip() or "X_autoencoder"

    def show_results(self, layer, calls):
        self.result_layer = show_embedding(self.viewer, layer, self.result_key())


TRAIN_NEW = "train on a labelled column"
LOAD_SAVED = "load a saved model"


class CellClassifierWidget(StepPanel):
    """``scnapse.tl.train_classifier`` on a labelled ``obs`` column (or a saved model), then
    ``scnapse.tl.annotate``: predicted class and confidence per cell, the points coloured by class."""

    title = "Cell classifier"

    def make_options(self):
        from magicgui.widgets import FileEdit

        self.mode = ComboBox(label="model", choices=[TRAIN_NEW, LOAD_SAVED], value=TRAIN_NEW)
        self.labels_key = ComboBox(label="labels (obs)", choices=[], nullable=True,
                                   tooltip="The obs column with the cell types to learn (cells without a label are "
                                           "left out).")
        self.model_path = FileEdit(label="model folder", mode="d",
                                   tooltip="A folder written by CellClassifier.save (or by 'Save pipeline…').")
        from ..tl import train_classifier

        defaults = _defaults(train_classifier)
        self.hidden = LineEdit(label="hidden layers", value=", ".join(str(h) for h in defaults["hidden"]),
                               tooltip="Widths; empty = logistic regression.")
        self.class_weight = ComboBox(label="class weight", choices=[("balanced", "balanced"), ("sampling", "sampling"),
                                                                    ("none", None)], value=defaults["class_weight"])
        self.key_added = LineEdit(label="key added", value="predicted")
        self.min_confidence = FloatSpinBox(label="min confidence", value=0.5, min=0.0, max=1.0, step=0.05)
        self.min_typicality = FloatSpinBox(label="min typicality", value=0.01, min=0.0, max=1.0, step=0.01)
        self.mode.changed.connect(self._visibility)
        self._visibility()
        return Container(widgets=[self.mode, self.labels_key, self.model_path, self.hidden, self.class_weight,
                                  self.key_added, self.min_confidence, self.min_typicality], labels=True)

    def make_train_options(self):
        from ..models.classifier import CLASSIFIER_DEFAULTS

        return TrainOptions(costs=("cross_entropy",), defaults=CLASSIFIER_DEFAULTS)

    def _visibility(self, *_):
        training = self.mode.value == TRAIN_NEW
        for w in (self.labels_key, self.hidden, self.class_weight):
            w.visible = training
        self.model_path.visible = not training
        if getattr(self, "train_options", None) is not None:
            self.train_options.visible = training
        if hasattr(self, "run_button") and not self.running:
            self.run_button.setText(self.run_text)

    @property
    def run_text(self):  # noqa: D401 - the Run button says what it does
        return "Train + annotate" if getattr(self, "mode", None) is None or self.mode.value == TRAIN_NEW else "Annotate"

    def on_cells_changed(self, adata):
        import pandas as pd

        if adata is None:
            self.labels_key.choices = []
            return
        cols = [c for c in adata.obs.columns
                if isinstance(adata.obs[c].dtype, pd.CategoricalDtype) or adata.obs[c].dtype == object]
        current = self.labels_key.value
        self.labels_key.choices = cols
        if current in cols:
            self.labels_key.value = current

    def calls(self, adata) -> list[Call]:
        from .. import tl
        from ._layers import ModelRef

        key = str(self.key_added.value).strip() or "predicted"
        annotate = {"key_added": key, "min_confidence": float(self.min_confidence.value),
                    "min_typicality": float(self.min_typicality.value)}
        if self.mode.value == LOAD_SAVED:
            path = str(self.model_path.value or "").strip()
            if not path or path == ".":
                raise ValueError("model folder: choose the folder of a saved CellClassifier.")
            return [Call("scnapse.tl.annotate", {"model": path, **annotate})]
        if not self.labels_key.value:
            raise ValueError("labels (obs): choose the obs column with the cell types to learn.")
        text = str(self.hidden.value).replace(",", " ").split()
        try:
            hidden = [int(t) for t in text]
        except ValueError:
            raise ValueError(f"hidden layers: {self.hidden.value!r} must be whole numbers, e.g. '256, 128'.") from None
        train = {"labels_key": self.labels_key.value, "hidden": hidden, "class_weight": self.class_weight.value,
                 **self.train_options.values()}
        return [Call("scnapse.tl.train_classifier", train, trains=True, func=tl.train_classifier, record=False,
                     returns="classifier"),
                Call("scnapse.tl.annotate", {"model": ModelRef("classifier"), **annotate})]

    def show_results(self, layer, calls):
        key = calls[-1].params["key_added"]
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
