"""EASE (Steck 2019): the closed-form linear item-item model, the strongest classic baseline on dense data.

Item j's score for a user is sum over the user's history items i of B[i, j], where B solves a ridge
regression of the binary user x item matrix X on itself with a zero diagonal:
P = (X^T X + lambda I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0. No epochs, no seed.
Why it is here: users of RecBole know it, and on dense random splits it ranks above LightGCN (and,
measured 2026-12-04, above our no-config two-tower: BENCHMARKS.md "Amazon-Baby" section); a
comparison without it would flatter us. `lam` is chosen on `valid` (NDCG@20) over `lambdas`
when the data has a valid split, as the learning baselines choose their epoch (else the grid's middle, 300).
Cost: one dense n_items x n_items inverse per lambda, so it refuses catalogues over `max_items`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.baselines.base import ReadsHistories, interaction_matrix, n_users_of
from recsys.baselines.selection import valid_split
from recsys.data.schema import Dataset
from recsys.metrics import evaluate_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EASEConfig:
    lambdas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)  # L2 strengths tried on valid
    lam: float | None = None  # a fixed strength (skips the search)
    max_items: int = 30_000   # n_items^2 float64 = 7.2 GB at this size


class EASE(ReadsHistories):
    """Closed-form item-item model (embarrassingly shallow autoencoder).

    Example::

        ease = EASE(lam=300.0).fit(ds, ds.split("train"))
        top = ease.score(np.array([0])).argsort()[0, ::-1][:20]
    """

    name = "ease"

    def __init__(self, config: EASEConfig | None = None, **overrides: object) -> None:
        base = config or EASEConfig()
        self.config = EASEConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]
        self.user_items: sp.csr_matrix | None = None
        self.weights: np.ndarray | None = None
        self.lam: float | None = None
        self.valid_history: list[tuple[float, float]] = []  # (lambda, valid NDCG@20)

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "EASE":
        x = interaction_matrix(train_interactions, n_users_of(dataset, train_interactions), dataset.n_items)
        return self.fit_matrix(x, valid_split(dataset), train_interactions)

    def fit_matrix(self, user_items: sp.csr_matrix, valid: pl.DataFrame | None, known: pl.DataFrame,
                   metric: str = "ndcg@20") -> "EASE":
        """Fit on a binary user x item matrix; `lam` chosen on `valid` by `metric` (`known` masked), or the
        grid's middle without valid. Shared by the baseline and the run's closed-form member (training)."""
        n_items = user_items.shape[1]
        if n_items > self.config.max_items:
            raise ValueError(f"EASE needs a dense {n_items} x {n_items} matrix per fit; this catalogue is over its "
                             f"{self.config.max_items}-item limit (use itemknn or lightgcn)")
        self.user_items = user_items
        gram = (user_items.T @ user_items).toarray().astype(np.float64)
        if self.config.lam is not None or valid is None or not valid.height:  # nothing to choose on: one fit
            self.lam = self.config.lam if self.config.lam is not None else self.config.lambdas[len(self.config.lambdas) // 2]
            self.weights = solve(gram, self.lam)
            return self
        k = int(metric.split("@")[1]) if "@" in metric else 20
        best, best_weights = -1.0, None
        for lam in self.config.lambdas:
            self.weights = solve(gram, lam)
            value = evaluate_scores(self.score, valid, known, n_items, ks=(k,))[metric]
            self.valid_history.append((lam, value))
            if value > best:
                best, self.lam, best_weights = value, lam, self.weights
        self.weights = best_weights
        log.info("ease: best valid %s %.4f at lambda %g", metric, best, self.lam)
        return self

    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.user_items is not None and self.weights is not None, "call fit() first"
        history = self.user_items[np.asarray(user_index_batch, dtype=np.int64)]
        return np.asarray(history @ self.weights, dtype=np.float32)


def solve(gram: np.ndarray, lam: float) -> np.ndarray:
    """B = -P / diag(P) with P = (G + lam I)^-1 and a zero diagonal (float32 for scoring)."""
    regularised = gram.copy()
    regularised[np.diag_indices_from(regularised)] += lam
    precision = np.linalg.inv(regularised)
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)
