"""The Classic panel: PCA, t-SNE or UMAP with scanpy, their options read from scanpy's own
signatures."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox

from ._layers import focus_layer, prepare_embedding, show_embedding
from ._options import Option, StepOptions, form
from ._panel import Call, StepPanel


def looks_like_counts(adata) -> bool:
    """Raw counts (as scnapse's preprocessing decides): non-negative integers reaching above 30."""
    from ..models._preprocess import looks_like_counts as _check
    from ..train.data import summarize

    try:
        return bool(_check(summarize(adata.X)))
    except Exception:
        return False


class ClassicWidget(StepPanel):
    """PCA, t-SNE or UMAP with scanpy (log-normalising raw counts first, if asked). The options and
    their defaults are those of ``scanpy.pp.pca``, ``scanpy.pp.neighbors`` and ``scanpy.tl.tsne``;
    one ``seed`` (their ``random_state``) is given to every step."""

    title = "Classic"
    trains = False
    n_comps = Option()
    n_neighbors = Option()
    perplexity = Option()
    seed = Option("random_state")

    def make_options(self):
        import scanpy as sc

        self.method = ComboBox(label="method", choices=["pca", "tsne", "umap"], value="umap")
        self.normalize = CheckBox(label="normalise + log1p counts first", value=True,
                                  tooltip="Scale each cell to 10,000 counts and take the log first; "
                                          "done only for raw counts, and only once.")
        pca = StepOptions(sc.pp.pca, show=("n_comps", "random_state"),
                          tooltips={"n_comps": "Principal components (auto: scanpy's choice, 50 or fewer)."})
        neighbors = StepOptions(sc.pp.neighbors, show=("n_neighbors",))
        tsne = StepOptions(sc.tl.tsne, show=("perplexity",))
        self.option_sets = {None: [pca, neighbors, tsne]}
        self.method.changed.connect(self.on_task_changed)
        self.on_task_changed()
        return form(self.method, self.normalize, pca.widgets["n_comps"], neighbors, tsne, pca.widgets["random_state"])

    def on_task_changed(self, *_):
        self.n_neighbors.visible = self.method.value == "umap"
        self.perplexity.visible = self.method.value == "tsne"

    def on_cells_changed(self, adata):
        if adata is not None:
            self.normalize.value = looks_like_counts(adata) and "log1p" not in adata.uns

    def calls(self, adata) -> list[Call]:
        pca, neighbors, tsne = (opts.values() for opts in self.option_sets[None])
        seed = pca["random_state"]
        if min(adata.n_obs, adata.n_vars) < 3:
            raise ValueError(f"PCA needs at least 3 cells and 3 genes; these data have {adata.n_obs} × {adata.n_vars}.")
        if pca["n_comps"] is not None:
            pca["n_comps"] = int(min(pca["n_comps"], adata.n_obs - 1, adata.n_vars - 1))
        else:
            pca.pop("n_comps")
        out = []
        if self.normalize.value and "log1p" not in adata.uns:
            out += [Call("scanpy.pp.normalize_total", {"target_sum": 10000.0}), Call("scanpy.pp.log1p")]
        out.append(Call("scanpy.pp.pca", pca))
        if self.method.value == "umap":
            out += [Call("scanpy.pp.neighbors", {"use_rep": "X_pca", **neighbors, "random_state": seed}),
                    Call("scanpy.tl.umap", {"random_state": seed})]
        elif self.method.value == "tsne":
            perplexity = float(tsne["perplexity"])
            if 3 * perplexity >= adata.n_obs:
                raise ValueError(f"perplexity={perplexity:g} is too large for {adata.n_obs} cells; "
                                 f"use less than {adata.n_obs / 3:.0f}.")
            out.append(Call("scanpy.tl.tsne", {"use_rep": "X_pca", "perplexity": perplexity, "random_state": seed}))
        return out

    def result_key(self) -> str:
        return {"pca": "X_pca", "tsne": "X_tsne", "umap": "X_umap"}[self.method.value]

    def result_preparer(self, layer, calls):
        make = prepare_embedding(layer, self.result_key())  # the embedding's layer, made in the worker
        return lambda adata, features: make(features)

    def show_results(self, layer, calls):
        # added hidden, shown at the next turn of the event loop: two short pauses, not one long one
        self.result_layer = show_embedding(self.viewer, layer, self.result_key(), prepared=self.prepared,
                                           focus=False)
        self.then("focus", lambda: focus_layer(self.viewer, self.result_layer))
