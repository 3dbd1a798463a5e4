"""The Time course panel: a Tracks layer becomes one sequence per track (``sn.ts.from_tracks``);
embed the tracks with a recurrent autoencoder, classify them from a labelled column, or forecast
their next steps. Embeddings appear in the scatter view (linked to the tracks), forecasts as points after each track's end,
classes as the tracks' colours."""

from __future__ import annotations

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox

from ._layers import ADATA, SESSION, VIEW, ModelRef, Session
from ._options import Option, Picker, StepOptions, form
from ._panel import Call, StepPanel

EMBED, FORECAST, CLASSIFY = "embed", "forecast", "classify"


#: obs columns of the sequences that are not per-track labels
NOT_LABELS = ("track_id", "start", "end", "n_gaps", "length")
#: the obs column of the predicted classes (``annotate_sequences``'s ``key_added``)
PREDICTED = "predicted"
#: options the panel does not show: how the sequences are stored (the panel makes them itself), and
#: ``n_layers`` (``hidden`` gives one width per recurrent layer)
STORAGE = ("sequence_key", "length_key", "n_layers")


def track_labels(seqs) -> list[str]:
    """The ``obs`` columns of one value per track (e.g. a fate read from the layer's features)."""
    return [] if seqs is None else [c for c in seqs.obs.columns if c not in NOT_LABELS]


class TimeCourseWidget(StepPanel):
    """Recurrent models (GRU / LSTM) on tracks: embed, forecast or classify; each task's options are
    those of its steps (``sequence_embedding``; ``train_forecaster`` + ``forecast``;
    ``train_sequence_classifier`` + ``annotate_sequences``)."""

    title = "Time course"
    run_text = "Train"
    train_costs = ("mse", "cross_entropy")
    n_latent, horizon, cell, hidden, labels_key = (Option() for _ in range(5))

    def make_options(self):
        from .. import tl

        self.tracks = ComboBox(label="tracks", choices=self._tracks_layers)
        self.task = ComboBox(label="task", choices=[EMBED, FORECAST, CLASSIFY], value=EMBED)
        embed = StepOptions(tl.sequence_embedding, hide=(*STORAGE, "key_added"))
        train_forecaster = StepOptions(tl.train_forecaster, hide=STORAGE)
        forecast = StepOptions(tl.forecast, hide=(*STORAGE, "key_added"))
        classify = StepOptions(tl.train_sequence_classifier, hide=STORAGE,
                               pickers={"labels_key": Picker(track_labels, nullable=True)},
                               labels={"labels_key": "labels (per track)"})
        annotate = StepOptions(tl.annotate_sequences, hide=STORAGE, fixed={"key_added": PREDICTED})
        self.option_sets = {EMBED: [embed], FORECAST: [train_forecaster, forecast], CLASSIFY: [classify, annotate]}
        self.train_steps = {EMBED: tl.sequence_embedding, FORECAST: tl.train_forecaster,
                            CLASSIFY: tl.train_sequence_classifier}
        self.task.changed.connect(self.show_task)
        self.tracks.changed.connect(self._on_tracks)
        return form(self.tracks, self.task, embed, train_forecaster, forecast, classify, annotate)

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        self.cells.visible = False  # the sequences are made from the Tracks layer
        self.show_task()

    def current_task(self):
        return self.task.value

    def on_cells_changed(self, adata):
        """The pickers list the sequences' columns (:meth:`_on_tracks`), not a cells layer's."""

    def _tracks_layers(self, *_):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, napari.layers.Tracks)]

    def _adata_layers(self, *_):
        return []

    def _refresh_choices(self, *_):
        super()._refresh_choices()
        if hasattr(self, "tracks") and self._worker is None:
            self.tracks.reset_choices()
            self._on_tracks()

    def _on_tracks(self, *_):
        seqs = None
        if self.tracks.value is not None:
            try:
                seqs = self.sequences()
            except (ValueError, KeyError, TypeError):
                seqs = None
        for opts in self.step_options(every=True):
            opts.on_data(seqs)

    @property
    def layer(self):
        return self.tracks.value if hasattr(self, "tracks") else None

    def sequences(self):
        """One sequence per track of the chosen Tracks layer (made once, kept on the layer)."""
        from ..ts import from_tracks

        layer = self.tracks.value
        if layer is None:
            raise ValueError("Pick a Tracks layer (File ▸ Open Sample ▸ scnapse ▸ Tracked nuclei).")
        if layer.metadata.get(ADATA) is None:
            seqs = from_tracks(layer)
            layer.metadata[ADATA] = seqs
            layer.metadata[SESSION] = Session(input=None, initial=seqs.copy())
            layer.metadata[VIEW] = {"obsm_key": None, "color_by": None, "legend": {}}
        return layer.metadata[ADATA]

    def run(self):
        if self._worker is not None:
            return None
        try:
            seqs = self.sequences()
            calls = self.calls(seqs)
        except (ValueError, KeyError, TypeError) as err:
            self._error(err)
            return None
        self._start(self.tracks.value, seqs, calls)
        return self._worker

    def calls(self, seqs) -> list[Call]:
        from .. import tl

        train = self.train_options.values()
        first, *then = (opts.values() for opts in self.step_options())
        if self.current_task() == EMBED:
            return [Call("scnapse.tl.sequence_embedding", {**first, **train}, trains=True)]
        # recorded: the saved pipeline re-trains the model (same options, seed, threads), then predicts with it
        if self.current_task() == FORECAST:
            return [Call("scnapse.tl.train_forecaster", {**first, **train}, trains=True, func=tl.train_forecaster,
                         returns="forecaster", step_id="forecaster"),
                    Call("scnapse.tl.forecast", {"model": ModelRef("forecaster"), **then[0]})]
        if not first["labels_key"]:
            raise ValueError("labels (per track): choose the obs column with each track's class.")
        return [Call("scnapse.tl.train_sequence_classifier", {**first, **train}, trains=True,
                     func=tl.train_sequence_classifier, returns="sequence_classifier", step_id="sequence_classifier"),
                Call("scnapse.tl.annotate_sequences", {"model": ModelRef("sequence_classifier"), **then[0]})]

    def show_results(self, layer, calls):
        seqs = layer.metadata[ADATA]
        name = calls[-1].name
        if name == "scnapse.tl.sequence_embedding":
            # the embedding in the scatter view, linked to the Tracks layer (not drawn over the tracks)
            from ._scatter import open_scatter

            self.scatter = open_scatter(self.viewer, layer, "X_rnn", color_by=None)
            self.result_layer = layer
        elif name == "scnapse.tl.forecast":
            self.result_layer = self._show_forecast(layer, seqs)
        else:
            from napari.utils.colormaps import Colormap

            from ._layers import cell_colors

            # one colour per class (a predicted column takes its truth column's colours), with a legend
            _, legend = cell_colors(seqs, PREDICTED)
            codes = seqs.obs[PREDICTED].astype("category").cat.codes
            k = max(len(legend), 1)
            by_track = dict(zip(seqs.obs["track_id"].to_numpy(), (codes.to_numpy() + 0.5) / k))
            feats = layer.features.copy()  # rows in the layer's (track, time) order
            feats[PREDICTED] = np.array([by_track.get(t, 0.0) for t in layer.data[:, 0]], dtype=float)
            # napari's Tracks setters take rows in the order the data were given, then sort them
            order = getattr(getattr(layer, "_manager", None), "_order", None)
            if order is not None:
                given = {}
                for col in feats.columns:
                    values = feats[col].to_numpy()
                    unsorted = np.empty_like(values)
                    unsorted[order] = values
                    given[col] = unsorted
                feats = pd.DataFrame(given)
            layer.features = feats
            layer.colormaps_dict = {**layer.colormaps_dict, PREDICTED: Colormap(
                colors=list(legend.values()) or ["#7f7f7f"], controls=np.linspace(0, 1, k + 1),
                interpolation="zero", name="scnapse predicted")}
            layer.color_by = PREDICTED
            layer.metadata[VIEW] = {**layer.metadata.get(VIEW, {}), "color_by": PREDICTED, "legend": legend}
            self.result_layer = layer

    def _show_forecast(self, layer, seqs):
        pred = np.asarray(seqs.obsm["forecast"])  # tracks × horizon × features
        features = list(seqs.uns["forecast"]["features"])
        spatial = ["z", "y", "x"][-(layer.data.shape[1] - 2):]
        if sorted(features) != sorted(spatial):
            self._summary = f"forecast written to obsm['forecast'] ({pred.shape[1]} steps of {features})."
            return layer
        cols = [features.index(a) for a in spatial]
        end = seqs.obs["end"].to_numpy(dtype=float)
        rows = [np.r_[end[i] + h + 1, pred[i, h, cols]] for i in range(pred.shape[0]) for h in range(pred.shape[1])]
        data = np.asarray(rows)
        feats = pd.DataFrame({"track_id": np.repeat(seqs.obs["track_id"].to_numpy(), pred.shape[1]),
                              "step": np.tile(np.arange(1, pred.shape[1] + 1), pred.shape[0])})
        name = f"{layer.name} forecast"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        return self.viewer.add_points(data, features=feats, name=name, size=3, face_color="#ff7f0e",
                                      border_width=0, out_of_slice_display=False)
