"""The Map query panel: ``scnapse.tl.map_query`` on a second cells layer (the query), with a saved
batch-aware autoencoder (or one mapped earlier in this napari session) as the reference. Only the
query's new batches are learnt; the reference's weights stay frozen."""

from __future__ import annotations

from magicgui.widgets import ComboBox, FileEdit

from ._layers import SESSION, show_embedding
from ._options import BATCH_KEY, LAYER, StepOptions, form
from ._panel import Call, StepPanel

SAVED = "a saved model (folder)"


def session_models(viewer) -> list[tuple[str, object]]:
    """``(label, model)`` of every autoencoder kept in the sessions of the viewer's cells layers."""
    from ..models import Autoencoder

    out, seen = [], set()
    for layer in viewer.layers:
        session = getattr(layer, "metadata", {}).get(SESSION)
        if session is None or id(session) in seen:
            continue
        seen.add(id(session))
        for name, model in session.models.items():
            if isinstance(model, Autoencoder):
                out.append((f"{name} (on {layer.name.split(' (')[0]})", model))
    return out


class MapQueryWidget(StepPanel):
    """Map the selected cells (the query) onto a reference autoencoder trained with ``batch_key``."""

    title = "Map query"
    run_text = "Map onto reference"
    trains = False

    def make_options(self):
        from ..tl import map_query

        self.source = ComboBox(label="reference", choices=self._sources, value=SAVED,
                               tooltip="A folder written by Autoencoder.save, or a model mapped in this session.")
        self.model_path = FileEdit(label="model folder", mode="d",
                                   tooltip="The saved reference (a batch-aware Autoencoder).")
        self.opts = StepOptions(map_query, show=("batch_key", "layer", "max_epochs", "init", "lr",
                                                 "batch_size", "key_added"), pickers={"batch_key": BATCH_KEY, "layer": LAYER},
                                tooltips={"batch_key": "obs column of the query's batches (none: the "
                                                       "reference's batch_key)."})
        self.option_sets = {None: [self.opts]}
        self.source.changed.connect(lambda *_: setattr(self.model_path, "visible", self.source.value == SAVED))
        return form(self.source, self.model_path, self.opts)

    def _sources(self, *_):
        return [(SAVED, SAVED)] + session_models(self.viewer)

    def _refresh_choices(self, *_):
        super()._refresh_choices()
        if self._worker is None and hasattr(self, "source"):
            self.source.reset_choices()

    def calls(self, adata) -> list[Call]:
        from pathlib import Path

        params = self.opts.values()
        if self.source.value == SAVED:
            path = str(self.model_path.value or "").strip()
            if not path or path == "." or not Path(path).is_dir():
                raise ValueError("model folder: choose the folder of a saved batch-aware Autoencoder "
                                 "(Autoencoder.save).")
            model = str(Path(path).resolve())
            return [Call("scnapse.tl.map_query", {"model": model, **params}, returns="mapped_autoencoder")]
        from ._layers import ModelRef

        # a model of this session: handed over by a first call, kept in the query's session (so that
        # "Save pipeline…" saves it beside the pipeline and the map_query step names its folder)
        model = self.source.value
        return [Call("reference", func=lambda _adata: model, record=False, returns="reference"),
                Call("scnapse.tl.map_query", {"model": ModelRef("reference"), **params}, returns="mapped_autoencoder")]

    def show_results(self, layer, calls):
        key = calls[-1].params.get("key_added") or "X_autoencoder"
        self.result_layer = show_embedding(self.viewer, layer, key)
        rec = layer.metadata["adata"].uns.get(key if key != "X_autoencoder" else "autoencoder", {})
        info = dict(rec.get("params", {})).get("map_query", {}) if isinstance(rec, dict) else {}
        if info:
            self._summary = f"new batches: {info.get('new_batches', info.get('batches', '?'))}."
