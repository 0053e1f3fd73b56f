"""The frozen content kNN graph: raw cosines by default, or cosines of z-scored features
(`model.item_knn_space = "standardised"`), which a mean shared by every item cannot dominate."""
from __future__ import annotations

import numpy as np

from recsys.models.graph import item_knn_graph

N = 120


def features(offset: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    x = centres[np.arange(N) % 4] + 0.3 * rng.normal(size=(N, 8))
    x = x * np.linspace(0.5, 2.0, 8) + offset  # features of unequal spread, around a shared mean
    return {"image": x.astype(np.float32)}, {"image": np.ones(N, bool)}


def edges(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def test_standardised_graph_is_the_raw_graph_of_z_scored_features():
    x, present = features(offset=30.0)
    z = (x["image"] - x["image"].mean(0)) / (x["image"].std(0) + 1e-6)
    a = item_knn_graph(x, present, 5, standardise=True)
    b = item_knn_graph({"image": z}, present, 5)
    assert np.allclose(a.toarray(), b.toarray(), atol=1e-6)


def test_standardised_graph_ignores_a_shared_mean_the_raw_graph_does_not():
    near, far = features(offset=0.0), features(offset=30.0)
    assert edges(item_knn_graph(*near, 5, standardise=True)) == edges(item_knn_graph(*far, 5, standardise=True))
    assert edges(item_knn_graph(*near, 5)) != edges(item_knn_graph(*far, 5))  # the default: raw cosines


def test_standardised_neighbours_share_the_planted_cluster():
    x, present = features(offset=30.0)
    g = item_knn_graph(x, present, 5, standardise=True).tocoo()
    assert np.mean(g.row % 4 == g.col % 4) > 0.95
