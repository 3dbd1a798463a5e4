"""Categorical colours: a predicted column uses its truth column's colours; "Unassigned" is grey."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scnapse.napari import cell_colors  # noqa: E402

from conftest import make_counts  # noqa: E402


def test_predicted_column_uses_truth_colours_and_unassigned_is_grey():
    adata = make_counts()
    truth = adata.obs["cell_type"].astype("category")
    adata.obs["cell_type"] = truth
    classes = [str(c) for c in truth.cat.categories]
    adata.uns["cell_type_colors"] = ["#ff0000", "#00ff00", "#0000ff"][: len(classes)]
    # the prediction lists the classes in another order, plus Unassigned
    pred = truth.astype(str).to_numpy().copy()
    pred[:5] = "Unassigned"
    adata.obs["predicted"] = pd.Categorical(pred, categories=[*classes[::-1], "Unassigned"])
    adata.obs["predicted_confidence"] = np.ones(adata.n_obs, dtype=np.float32)
    _, truth_legend = cell_colors(adata, "cell_type")
    _, legend = cell_colors(adata, "predicted")
    for c in classes:
        assert legend[c] == truth_legend[c]
    assert legend["Unassigned"] == "#bbbbbb"
    rgba, _ = cell_colors(adata, "predicted")
    assert np.allclose(rgba[:5, :3], 0xBB / 255)
