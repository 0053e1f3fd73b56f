"""ItemKNN: classic item-based collaborative filtering (Sarwar et al. 2001) on implicit feedback.

Two items are similar when the same users consumed them: cosine over the columns of the binary
train user x item matrix, shrunk towards 0 for items with little support (sim = dot /
(|i| |j| + shrink)), and each target item keeps only its `k` most similar items. A user's score
for item j is the sum of j's similarities to the items in their history. All sparse (scipy), so
it fits TikTok's 6.7k items and would fit far larger catalogues.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.baselines.base import ReadsHistories, interaction_matrix, n_users_of
from recsys.data.schema import Dataset


@dataclass(frozen=True)
class ItemKNNConfig:
    k: int = 100          # neighbours kept per target item
    shrink: float = 10.0  # shrinkage of the cosine denominator; damps pairs seen by few users
    block: int = 1024     # rows densified at a time when selecting the top k
    popularity_ties: bool = True  # order items no neighbour votes for by popularity (a full list
                                  # for thin histories, and no arbitrary tie order in the metrics)


class ItemKNN(ReadsHistories):
    """Cosine item-item neighbourhood model.

    Example::

        knn = ItemKNN(ItemKNNConfig(k=50, shrink=10)).fit(ds, ds.split("train"))
    """

    name = "itemknn"

    def __init__(self, config: ItemKNNConfig | None = None, **overrides: float) -> None:
        base = config or ItemKNNConfig()
        self.config = ItemKNNConfig(**{**base.__dict__, **overrides})
        self.user_items: sp.csr_matrix | None = None
        self.weights: sp.csr_matrix | None = None  # W[i, j]: vote of history item i for target j
        self.tiebreak: np.ndarray | None = None

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "ItemKNN":
        x = interaction_matrix(train_interactions, n_users_of(dataset, train_interactions), dataset.n_items)
        self.user_items = x
        self.weights = similarity_top_k(x, self.config.k, self.config.shrink, self.config.block)
        popularity = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        scale = 1e-6 / max(popularity.max(initial=0.0), 1.0)  # far below any neighbour vote
        self.tiebreak = (popularity * scale * self.config.popularity_ties).astype(np.float32)
        return self

    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.user_items is not None and self.weights is not None, "call fit() first"
        history = self.user_items[np.asarray(user_index_batch, dtype=np.int64)]
        return np.asarray((history @ self.weights).todense(), dtype=np.float32) + self.tiebreak


def similarity_top_k(user_items: sp.csr_matrix, k: int, shrink: float, block: int = 1024) -> sp.csr_matrix:
    """Shrunk cosine similarities, keeping for each target item (column) its k best neighbours.

    Returns W (n_items x n_items) with W[i, j] = sim(i, j) if i is among j's top-k, else 0;
    the diagonal is 0 so an item never recommends itself.
    """
    items = user_items.T.tocsr()
    co = (items @ items.T).tocsr()
    norms = np.sqrt(np.asarray(co.diagonal(), dtype=np.float32))
    n = co.shape[0]
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        dense = np.asarray(co[start:stop].todense(), dtype=np.float32)
        dense /= norms[start:stop, None] * norms[None, :] + shrink + 1e-12
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        kk = min(k, n - 1)
        top = np.argpartition(-dense, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((stop - start, 0), np.int64)
        vals = np.take_along_axis(dense, top, axis=1)
        keep = vals > 0
        # Row j of `dense` holds target j's similarities; W stores them transposed (column j).
        cols_out.append(np.repeat(np.arange(start, stop), kk)[keep.ravel()])
        rows_out.append(top.ravel()[keep.ravel()])
        vals_out.append(vals.ravel()[keep.ravel()])
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    vals = np.concatenate(vals_out) if vals_out else np.zeros(0, np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
