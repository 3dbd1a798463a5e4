"""The Image model panel: pick Image and Labels layers, annotate a few cells by clicking with a
class (a Points layer), train a CNN classifier and predict every cell (the Labels layer coloured
by class, the class table in its ``features``), or embed every cell with a CNN autoencoder (the
embedding shown in the scatter view, linked to the Labels layer)."""

from __future__ import annotations

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, LineEdit, PushButton

from ._layers import ADATA, SESSION, VIEW, ModelRef, Session
from ._options import Option, StepOptions, form
from ._panel import Call, StepPanel

CLASSIFY = "classify (from annotated cells)"
EMBED = "embed (CNN autoencoder)"
ANNOTATION_LAYER = "scnapse annotations"
ANNOTATION_KEY = "annotation"
#: the obs column of the predicted classes (``annotate_images``'s ``key_added``)
PREDICTED = "predicted_class"
#: the Labels layer's metadata key of what its cells were made from (the image, the labels, the crop options)
SOURCE = "scnapse_cells_source"


def warm_label_painting(dtype) -> None:
    """Compile napari's kernel that colours a Labels layer by a ``DirectLabelColormap`` (numba:
    seconds on first use) for labels of ``dtype``. Called in the worker thread, so that painting
    the predicted classes afterwards does not freeze the interface."""
    try:
        from napari.utils.colormaps import DirectLabelColormap
        from napari.utils.colormaps import _accelerated_cmap as accel

        colors = {None: np.zeros(4), 0: np.zeros(4), 1: np.array([1.0, 0, 0, 1]), 2: np.array([0, 0, 1.0, 1])}
        accel.labels_raw_to_texture_direct(np.arange(4, dtype=dtype).reshape(2, 2),
                                           DirectLabelColormap(color_dict=colors))
    except Exception:  # noqa: BLE001 - a speed-up only; napari's internals may change
        pass


class ImageModelWidget(StepPanel):
    """CNN on per-cell crops of an Image layer segmented by a Labels layer. The crop options are
    ``scnapse.im.cells_from_labels``'s, the model options those of ``train_image_classifier`` /
    ``annotate_images`` (classify) or ``image_embedding`` (embed)."""

    title = "Image model"
    train_costs = ("mse", "bce", "cross_entropy")
    train_exclude = ()
    size, normalize, mask, n_latent, channels, class_weight = (Option() for _ in range(6))

    def make_options(self):
        from .. import tl
        from ..im import cells_from_labels

        self.image_layer = ComboBox(label="image", choices=self._layers_of(napari.layers.Image))
        self.labels_layer = ComboBox(label="labels", choices=self._layers_of(napari.layers.Labels))
        self.mode = ComboBox(label="task", choices=[CLASSIFY, EMBED], value=CLASSIFY)
        crops = StepOptions(cells_from_labels, show=("size", "normalize", "mask"))
        self.class_name = LineEdit(label="class to click", value="class A",
                                   tooltip="Clicks on the annotation layer mark cells with this class.")
        self.annotate_button = PushButton(text="Annotate cells by clicking")
        self.annotate_button.changed.connect(self.annotation_layer)
        self.class_name.changed.connect(self._set_click_class)
        classify = StepOptions(tl.train_image_classifier, hide=("labels_key", "crops_key", "pretrained"))
        predict = StepOptions(tl.annotate_images, hide=("crops_key",), fixed={"key_added": PREDICTED})
        embed = StepOptions(tl.image_embedding, hide=("method", "crops_key", "key_added"))
        self.option_sets = {CLASSIFY: [crops, classify, predict], EMBED: [crops, embed]}
        self.train_steps = {CLASSIFY: tl.train_image_classifier, EMBED: tl.image_embedding}
        self.mode.changed.connect(self.show_task)
        return form(self.image_layer, self.labels_layer, self.mode, crops, self.class_name, self.annotate_button,
                    classify, predict, embed)

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        self.cells.visible = False  # the cells are made from the Image and Labels layers
        self.show_task()

    def current_task(self):
        return self.mode.value

    def on_task_changed(self):
        self.class_name.visible = self.annotate_button.visible = self.mode.value == CLASSIFY

    def _layers_of(self, kind):
        return lambda *_: [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    @property
    def run_text(self):  # noqa: D401
        return "Train + predict" if getattr(self, "mode", None) is None or self.mode.value == CLASSIFY else "Embed"

    def _refresh_choices(self, *_):
        super()._refresh_choices()
        if hasattr(self, "image_layer") and self._worker is None:
            self.image_layer.reset_choices()
            self.labels_layer.reset_choices()

    def _adata_layers(self, *_):  # the image cells live with the Labels layer; no cells picker needed
        return []

    # -- annotation --------------------------------------------------------------------------------
    def annotation_layer(self, *_):
        """The Points layer where clicks annotate cells (created, in add mode, if absent)."""
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Points) and layer.name == ANNOTATION_LAYER:
                break
        else:
            layer = self.viewer.add_points(
                np.zeros((0, 2)), name=ANNOTATION_LAYER, features=pd.DataFrame({ANNOTATION_KEY: pd.Series([], dtype=object)}),
                size=8, face_color="white", border_color="black", border_width=0.2,
            )
            layer.events.data.connect(lambda *_: self._color_annotations(layer))
        layer.feature_defaults[ANNOTATION_KEY] = str(self.class_name.value)
        self.viewer.layers.selection.active = layer
        layer.mode = "add"
        return layer

    def legend_layers(self):
        """The painted classes and the annotation points (one colour per class)."""
        return [self.labels_layer.value if hasattr(self, "labels_layer") else None, self._annotation_layer_or_none()]

    def _annotation_layer_or_none(self):
        return next((x for x in self.viewer.layers
                     if isinstance(x, napari.layers.Points) and x.name == ANNOTATION_LAYER), None)

    def _color_annotations(self, layer) -> None:
        """Each clicked point in its class's colour (the colour its predicted class will get)."""
        from ._legend import color_annotations

        color_annotations(layer, ANNOTATION_KEY)
        self.legend.update_legend()

    def _set_click_class(self, *_):
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Points) and layer.name == ANNOTATION_LAYER:
                layer.feature_defaults[ANNOTATION_KEY] = str(self.class_name.value)

    def annotations(self, labels: np.ndarray) -> dict[int, str]:
        """``{label id: class}`` from the annotation layer's points (the object under each click)."""
        layer = next((x for x in self.viewer.layers if x.name == ANNOTATION_LAYER), None)
        if layer is None or len(layer.data) == 0:
            return {}
        out = {}
        classes = layer.features[ANNOTATION_KEY].astype(str).to_numpy()
        for (y, x), cls in zip(np.asarray(layer.data)[:, -2:], classes):
            yi, xi = int(round(y)), int(round(x))
            if 0 <= yi < labels.shape[-2] and 0 <= xi < labels.shape[-1] and labels[..., yi, xi].max() > 0:
                out[int(labels[..., yi, xi].max())] = cls
        return out

    # -- running -------------------------------------------------------------------------------------
    def _prepare(self):
        """What the worker runs first: the cells of the chosen Image + Labels layers (crops made
        once per image, crop size and normalisation, then kept on the Labels layer), with the
        clicked annotation in ``obs``. Checked here, in the GUI thread, before anything starts."""
        from ..im import cells_from_labels

        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None or labels is None:
            raise ValueError("Pick an Image layer and its Labels layer (File ▸ Open Sample ▸ scnapse ▸ nuclei).")
        options = self.step_options()[0].values()  # the crop options
        key = (image.name, *sorted(options.items()))
        cached = labels.metadata.get(ADATA) if labels.metadata.get("scnapse_cells_key") == key else None
        marks = self.annotations(np.asarray(labels.data)) if self.mode.value == CLASSIFY else None
        channel_axis = -1 if image.rgb else None
        image_data, label_data = image.data, labels.data

        source = {"image": image_data, "labels": label_data, "options": {**options, "channel_axis": channel_axis}}

        def prepare():
            cells, initial = cached, None
            if cells is None:
                cells = cells_from_labels(np.asarray(image_data), np.asarray(label_data), channel_axis=channel_axis,
                                          **options)
                initial = cells.copy()
            if marks is not None:
                warm_label_painting(np.asarray(label_data).dtype)  # here, not when the classes are painted
            return cells, (key, initial, source)

        return cached, marks, prepare

    def on_prepared(self, layer, cells, extra) -> None:
        key, initial, source = extra
        if layer.metadata.get(ADATA) is not cells:
            layer.metadata[ADATA] = cells
            layer.metadata["scnapse_cells_key"] = key
            layer.metadata[SOURCE] = source
            layer.metadata[SESSION] = Session(input=None, initial=initial)
            layer.metadata[VIEW] = {"obsm_key": None, "color_by": None, "legend": {}}

    def export_input(self, layer, session, path):
        """The cells' input as the pipeline re-makes them: the image and its labels written beside
        the pipeline (``<name>_image.tif``, ``<name>_labels.tif``) with the crop options, i.e.
        ``scnapse.im.cells_from_labels`` as the panel ran it."""
        import tifffile

        source = layer.metadata.get(SOURCE)
        if source is None:
            return super().export_input(layer, session, path)
        files = {}
        for what in ("image", "labels"):
            files[what] = path.with_name(f"{path.stem}_{what}.tif")
            tifffile.imwrite(files[what], np.asarray(source[what]))
        return {"image": str(files["image"].resolve()), "labels": str(files["labels"].resolve()),
                **source["options"]}

    def run(self):
        if self._worker is not None:
            return None
        try:
            cached, marks, prepare = self._prepare()
            calls = self.calls(marks)
        except (ValueError, KeyError, TypeError) as err:
            self._error(err)
            return None
        self._start(self.labels_layer.value, cached, calls, prepare=prepare)
        return self._worker

    @property
    def layer(self):
        return self.labels_layer.value if hasattr(self, "labels_layer") else None

    def calls(self, marks: dict | None) -> list[Call]:
        """The steps for the chosen task; ``marks`` = ``{label id: class}`` of the clicked cells."""
        from .. import tl

        _, *steps = self.step_options()
        train = self.train_options.values()
        if self.mode.value == EMBED:
            if train.get("cost") == "cross_entropy":
                raise ValueError("cost='cross_entropy' is for classifiers; an embedding uses 'mse' or 'bce'.")
            return [Call("scnapse.tl.image_embedding", {**steps[0].values(), **train}, trains=True)]
        marks = marks or {}
        classes = sorted(set(marks.values()))
        if len(classes) < 2:
            raise ValueError(f"Annotate cells of at least two classes: click cells on the '{ANNOTATION_LAYER}' layer "
                             f"(found {len(marks)} annotated cell(s), classes {classes}).")
        if train.get("cost") not in (None, "cross_entropy"):
            raise ValueError(f"cost={train['cost']!r} is a reconstruction cost; a classifier uses 'cross_entropy'.")
        classify, predict = steps
        by_class = {cls: sorted(int(i) for i, c in marks.items() if c == cls) for cls in classes}
        # recorded: the saved pipeline marks the same cells, re-trains the classifier and predicts with it
        return [Call("scnapse.im.mark_classes", {"classes": by_class, "key_added": ANNOTATION_KEY}),
                Call("scnapse.tl.train_image_classifier", {"labels_key": ANNOTATION_KEY, **classify.values(), **train},
                     trains=True, func=tl.train_image_classifier, returns="image_classifier",
                     step_id="image_classifier"),
                Call("scnapse.tl.annotate_images", {"model": ModelRef("image_classifier"), **predict.values()})]

    def show_results(self, layer, calls):
        from napari.utils.colormaps import DirectLabelColormap

        from ..im import class_table, label_colors

        cells = layer.metadata[ADATA]
        if calls[-1].name == "scnapse.tl.image_embedding":
            # the embedding in the scatter view, linked to the Labels layer (not drawn over the image)
            from ._scatter import open_scatter

            self.scatter = open_scatter(self.viewer, layer, "X_cnn", color_by=None)
            self.result_layer = layer
            return
        table = class_table(cells, PREDICTED)
        layer.colormap = DirectLabelColormap(color_dict=label_colors(table))
        features = table.reset_index(drop=True)
        features.insert(0, "index", features["label"])
        layer.features = features
        layer.metadata[VIEW] = {"obsm_key": None, "color_by": PREDICTED,
                                "legend": dict(table.attrs["colors"])}
        self.result_layer = layer
        counts = cells.obs[PREDICTED].value_counts()
        self._summary = "predicted " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " cells."
