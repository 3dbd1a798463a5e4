"""The Time course panel: a Tracks layer becomes one sequence per track (``sn.ts.from_tracks``);
embed the tracks with a recurrent autoencoder, classify them from a labelled column, or forecast
their next steps. Embeddings appear in the scatter view (linked to the tracks), forecasts as points after each track's end,
classes as the tracks' colours."""

from __future__ import annotations

import weakref

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
#: the Tracks layer's metadata key of the table and lineage graph its sequences were made from
SOURCE = "scnapse_tracks_source"


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
            from ..ts._tracks import _tracks_frame

            table, _, _, graph = _tracks_frame(layer, "track_id", "frame")
            seqs = from_tracks(table, graph=graph)
            layer.metadata[SOURCE] = (table, graph)  # what a saved pipeline re-makes the sequences from
            layer.metadata[ADATA] = seqs
            layer.metadata[SESSION] = Session(input=None, initial=seqs.copy())
            layer.metadata[VIEW] = {"obsm_key": None, "color_by": None, "legend": {}}
        return layer.metadata[ADATA]

    def export_input(self, layer, session, path):
        """The sequences' input as the pipeline re-makes them: the Tracks layer's table (data and
        features) written beside the pipeline (``<name>_tracks.csv``), its lineage graph in the
        input, i.e. ``scnapse.ts.from_tracks`` as the panel ran it."""
        if layer.metadata.get(SOURCE) is None:
            return super().export_input(layer, session, path)
        table, graph = layer.metadata[SOURCE]
        csv = path.with_name(f"{path.stem}_tracks.csv")
        table.to_csv(csv, index=False)
        spec = {"tracks": str(csv.resolve())}
        if graph:
            spec["graph"] = {int(child): [int(p) for p in np.atleast_1d(parents)] for child, parents in graph.items()}
        return spec

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
        data, feats = forecast_rows(seqs.obs["track_id"].to_numpy(), seqs.obs["end"].to_numpy(dtype=float),
                                    pred[:, :, cols], spatial)
        name = f"{layer.name} forecast"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        base = forecast_size(layer)
        size = np.where(feats["now"].to_numpy(), NOW_SIZE * base, base)
        points = self.viewer.add_points(
            data, features=feats, name=name, size=size, symbol=FORECAST_SYMBOL, face_color="white",
            border_color=FORECAST_BORDER, border_width=0.1, scale=layer.scale, translate=layer.translate,
            projection_mode="none")
        color_forecast(points, layer)
        tracks = weakref.ref(layer)
        refresh = _weak(lambda pts, _=None: color_forecast(pts, tracks()), points)
        layer.events.color_by.connect(refresh)
        layer.events.colormap.connect(refresh)
        if "z" in spatial:  # shown in every z plane of a 2-D view, as the tracks are
            follow = _weak(lambda pts, _=None: follow_slice(pts, self.viewer.dims), points)
            for event in (self.viewer.dims.events.point, self.viewer.dims.events.ndisplay,
                          self.viewer.dims.events.order):
                event.connect(follow)
            follow()
        h = pred.shape[1]
        self._summary = (f"forecast of {h} steps after each track's end, drawn as ◆ in the track's colour from its "
                         f"last frame to the last forecast frame (the current frame's step larger).")
        return points


#: the forecast points' symbol and border (observed cells are discs and track lines)
FORECAST_SYMBOL, FORECAST_BORDER = "diamond", "white"
#: the size of the step forecast for the frame shown, relative to the other steps
NOW_SIZE = 1.6


def forecast_rows(track_ids, end, pred, spatial) -> tuple[np.ndarray, pd.DataFrame]:
    """The points of a forecast: each track's forecast path (``pred``: tracks × horizon ×
    ``spatial``) drawn at every frame from the track's last one (``end``) to its last forecast
    frame, so that it shows while the track's end is on screen. Columns ``[frame, *spatial]``;
    features: ``track_id``, ``step`` (1…horizon), ``frame`` (the step's own frame), ``now``
    (the step forecast for the frame it is drawn at), and the step's own spatial coordinates."""
    n, horizon, _ = pred.shape
    shown_at = end[:, None] + np.arange(horizon + 1)[None, :]  # tracks × frames drawn at
    track = np.repeat(np.arange(n), (horizon + 1) * horizon)
    at = np.repeat(shown_at.ravel(), horizon)
    step = np.tile(np.arange(1, horizon + 1), n * (horizon + 1))
    xyz = pred[track, step - 1]
    own = end[track] + step
    data = np.c_[at, xyz]
    feats = pd.DataFrame({"track_id": np.asarray(track_ids)[track], "step": step, "frame": own, "now": own == at,
                          **{a: xyz[:, k] for k, a in enumerate(spatial)}})
    return data, feats


def forecast_size(tracks) -> float:
    """Forecast point size in the tracks' own units: a sixtieth of their extent in the plane shown."""
    data = np.asarray(tracks.data, dtype=float)
    extent = float(np.ptp(data[:, -2:], axis=0).max()) if len(data) else 0.0
    return extent / 60 if extent > 0 else 1.0


def track_end_colors(tracks, track_ids) -> np.ndarray:
    """RGBA of each track's last vertex, as the Tracks layer draws it now (its ``color_by``)."""
    manager = getattr(tracks, "_manager", None)
    data = np.asarray(getattr(manager, "data", None) if manager is not None else tracks.data)
    if manager is None:  # napari sorts the vertices by track, then time
        data = data[np.lexsort((data[:, 1], data[:, 0]))]
    colors = np.asarray(tracks.track_colors, dtype=float)
    ids = data[:, 0]
    uniq, first_from_end = np.unique(ids[::-1], return_index=True)
    last = dict(zip(uniq.tolist(), (len(ids) - 1 - first_from_end).tolist()))
    grey = np.array([0.5, 0.5, 0.5, 1.0])
    return np.array([colors[last[t]] if t in last else grey for t in np.asarray(track_ids, dtype=float).tolist()])


def color_forecast(points, tracks) -> None:
    """Each forecast point in its track's colour; the tracks' legend (a class colouring) with it."""
    if tracks is None or len(points.data) == 0:
        return
    points.face_color = track_end_colors(tracks, points.features["track_id"].to_numpy())
    view = tracks.metadata.get(VIEW, {})
    points.metadata[VIEW] = {"obsm_key": None, "color_by": view.get("color_by"), "legend": dict(view.get("legend") or {})}


def follow_slice(points, dims) -> None:
    """3-D tracks in a 2-D view: every forecast point in the z plane shown (the Tracks layer draws
    its tracks in every plane); in a 3-D view, at its own z."""
    if "z" not in points.features or len(points.data) == 0:
        return
    axis = dims.ndim - points.ndim + 1  # the world axis of the points' z
    z = points.features["z"].to_numpy(dtype=float)
    if axis not in dims.displayed:
        z = np.full_like(z, (dims.point[axis] - points.translate[1]) / points.scale[1])
    if not np.array_equal(points.data[:, 1], z):
        data = np.array(points.data)
        data[:, 1] = z
        points.data = data


def _weak(func, layer):
    """``func(layer, event)`` holding the layer weakly (a removed layer is no longer updated)."""
    ref = weakref.ref(layer)

    def call(event=None):
        target = ref()
        if target is not None:
            func(target, event)

    return call
