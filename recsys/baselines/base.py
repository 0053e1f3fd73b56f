"""What every baseline is: fit on train interactions, then score whole catalogues for user batches.

The interface is deliberately the evaluation harness's own `ScoreFn` (user_index batch ->
(batch, n_items) float32), so a baseline is judged by exactly the code that judges a trained
two-tower run: same split, same masking, same metrics.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.schema import Dataset


@runtime_checkable
class Baseline(Protocol):
    """A recommender that needs no run directory.

    `fit` sees only the train interactions (dataset indices); `score` returns one row of item
    scores per user index, higher = recommend first. Masking seen items is the harness's job.
    """

    name: str

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "Baseline": ...

    def score(self, user_index_batch: np.ndarray) -> np.ndarray: ...


def interaction_matrix(train: pl.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary user x item CSR matrix of train interactions (repeats collapse to 1: implicit feedback)."""
    pairs = train.select("user_index", "item_index").unique()
    rows = pairs["user_index"].to_numpy().astype(np.int64)
    cols = pairs["item_index"].to_numpy().astype(np.int64)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)


def n_users_of(dataset: Dataset, train: pl.DataFrame) -> int:
    """Users are indexed over the whole dataset, so test users without train rows still get a row."""
    return max(dataset.n_users, int(train["user_index"].max() or 0) + 1 if train.height else 0)


def user_sequences(train: pl.DataFrame, n_users: int) -> list[np.ndarray]:
    """Per user_index, the train item indices in time order (equal timestamps: source-file order)."""
    ordered = (train.with_row_index("_row").sort("user_index", "timestamp", "_row")
               .group_by("user_index", maintain_order=True).agg("item_index"))
    out = [np.zeros(0, np.int64) for _ in range(n_users)]
    for user, items in zip(ordered["user_index"].to_list(), ordered["item_index"].to_list()):
        out[user] = np.asarray(items, dtype=np.int64)
    return out


class ReadsHistories:
    """For baselines that score a user from their history matrix (`user_items`, set by `fit`): ItemKNN, EASE."""

    user_items: sp.csr_matrix | None

    def read_histories(self, interactions: pl.DataFrame):
        """Score users from the items of `interactions` instead of their train items (ranking test after
        valid reads train + valid, as the feed does); what `fit` learned is unchanged."""
        assert self.user_items is not None, "call fit() first"
        n_users = max(self.user_items.shape[0], int(interactions["user_index"].max() or 0) + 1 if interactions.height else 0)
        self.user_items = interaction_matrix(interactions, n_users, self.user_items.shape[1])
        return self
