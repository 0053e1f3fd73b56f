"""SLIT (Choi et al. 2021, "Session-aware Linear Item-Item Models", its transition part): the closed-form
next-item model, a classic to hold a sequential two-tower against beside SASRec.

Every train transition of a user's time-ordered sequence is a row of a ridge regression: the input is the
items up to step t (the last `window`), item t-a weighted 2^(-a / half_life) (all 1 with half-life 0), the
target is item t+1. B = argmin ||Y - X B||^2 + lambda ||B||^2 = (X^T X + lambda I)^-1 X^T Y, and a user's
score of item j is sum over their latest `window` items of 2^(-age / half_life) B[i, j] (age 0 = the last):
the same weighting at fit and at scoring. No epochs, no seed.

Why: EASE (`recsys.baselines.ease`) regresses the whole basket on itself and ignores order, so on a next-item
task it is far below SASRec (ML-100K test NDCG@10 .0711 vs .1209). Measured on ML-100K's leave-one-out valid
split (2026-12-05): SLIT at half-life 10, lambda 1,000 reaches NDCG@10 .1276 / NDCG@20 .1542, level with
SASRec's valid (NDCG@20 .1502) in seconds; on test (train + valid read) NDCG@10 .0998 against SASRec's .1209.
As a closed-form member of the ML-100K run (a prototype, not kept) it added nothing on valid on top of the
sequence-trained towers (BENCHMARKS.md, "SLIT"). `lambda` and `half_life` are chosen on valid (NDCG@20 for the baseline) over the grids. Cost: one dense
n_items x n_items eigendecomposition per half-life, so it refuses catalogues over `max_items`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.baselines.base import n_users_of, user_sequences
from recsys.baselines.selection import valid_split
from recsys.data.schema import Dataset
from recsys.metrics import evaluate_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SLITConfig:
    lambdas: tuple[float, ...] = (100.0, 300.0, 1000.0, 3000.0, 10000.0)  # L2 strengths tried on valid
    half_lives: tuple[float, ...] = (3.0, 10.0, 30.0)  # recency half-lives (events) tried on valid; 0 = no decay
    lam: float | None = None        # fixed strength and half-life (skip the search when both are set)
    half_life: float | None = None
    window: int = 50                # latest items read per row (SASRec's max_len; the served history window)
    max_items: int = 30_000         # n_items^2 float64 per matrix: 7.2 GB at this size


def recency_rows(sequences: list[np.ndarray], n_items: int, half_life: float, window: int,
                 prefixes: bool) -> sp.csr_matrix:
    """Recency-weighted item rows of time-ordered sequences (item `age` steps before the row's end counts
    2^(-age / half_life); 0 = all count 1; at most `window` items; a repeated item's weights add up).

    `prefixes=True`: one row per transition, ending at every item but each sequence's last (the regression's
    inputs, in `transition_targets`' order); `prefixes=False`: one row per sequence, ending at its last item
    (what scores a user; empty sequences give empty rows)."""
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    items = np.concatenate([np.asarray(s, np.int64) for s in sequences]) if lengths.sum() else np.zeros(0, np.int64)
    position = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if prefixes:
        ends = np.flatnonzero(position < np.repeat(lengths, lengths) - 1)
        row_of_end = np.arange(len(ends))
        n_rows = len(ends)
    else:
        ends = np.cumsum(lengths)[lengths > 0] - 1
        row_of_end = np.flatnonzero(lengths > 0)
        n_rows = len(sequences)
    rows, cols, vals = [], [], []
    for age in range(max(1, int(window))):
        inside = position[ends] >= age
        rows.append(row_of_end[inside])
        cols.append(items[ends[inside] - age])
        vals.append(np.full(int(inside.sum()), 2.0 ** (-age / half_life) if half_life > 0 else 1.0))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_rows, n_items), dtype=np.float64)


def transition_targets(sequences: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """One-hot next item of every transition, in `recency_rows(prefixes=True)`'s row order."""
    nexts = [np.asarray(s, np.int64)[1:] for s in sequences if len(s) > 1]
    target = np.concatenate(nexts) if nexts else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(target)), (np.arange(len(target)), target)), shape=(len(target), n_items))


class TransitionSolver:
    """B(lambda) = (G + lambda I)^-1 C for many lambdas from one eigendecomposition of G = X^T X."""

    def __init__(self, inputs: sp.csr_matrix, targets: sp.csr_matrix):
        gram = (inputs.T @ inputs).toarray()
        self.eigenvalues, self.basis = np.linalg.eigh(gram)
        self.projected = self.basis.T @ (inputs.T @ targets).toarray()

    def weights(self, lam: float) -> np.ndarray:
        return (self.basis @ (self.projected / (self.eigenvalues + lam)[:, None])).astype(np.float32)


class SLIT:
    """Closed-form next-item transition model.

    Example::

        slit = SLIT(lam=1000.0, half_life=10.0).fit(ds, ds.split("train"))
        top = slit.score(np.array([0])).argsort()[0, ::-1][:10]
    """

    name = "slit"

    def __init__(self, config: SLITConfig | None = None, **overrides: object) -> None:
        base = config or SLITConfig()
        self.config = SLITConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]
        self.weights: np.ndarray | None = None
        self.lam: float | None = None
        self.half_life: float | None = None
        self.user_rows: sp.csr_matrix | None = None
        self.valid_history: list[tuple[float, float, float]] = []  # (half-life, lambda, valid metric)

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "SLIT":
        if dataset.timestamps_synthetic:  # e.g. TikTok: "next" would be the next row of the file
            raise ValueError(f"SLIT learns which item comes next, and {dataset.name}'s timestamps are synthetic (the "
                             "source has no time, they are its row order): use ease or itemknn")
        sequences = user_sequences(train_interactions, n_users_of(dataset, train_interactions))
        return self.fit_sequences(sequences, dataset.n_items, valid_split(dataset), train_interactions)

    def fit_sequences(self, sequences: list[np.ndarray], n_items: int, valid: pl.DataFrame | None,
                      known: pl.DataFrame, metric: str = "ndcg@20") -> "SLIT":
        """Fit on per-user time-ordered item sequences; `lam` and `half_life` chosen on `valid` by `metric`
        (`known` masked), or the grids' middles without valid. Shared by the baseline and the run's member."""
        cfg = self.config
        if n_items > cfg.max_items:
            raise ValueError(f"SLIT needs dense {n_items} x {n_items} matrices; this catalogue is over its "
                             f"{cfg.max_items}-item limit (use sasrec or itemknn)")
        half_lives = (cfg.half_life,) if cfg.half_life is not None else cfg.half_lives
        lambdas = (cfg.lam,) if cfg.lam is not None else cfg.lambdas
        choose = valid is not None and valid.height > 0 and len(half_lives) * len(lambdas) > 1
        if not choose:
            half_lives, lambdas = (half_lives[len(half_lives) // 2],), (lambdas[len(lambdas) // 2],)
        targets = transition_targets(sequences, n_items)
        k = int(metric.split("@")[1]) if "@" in metric else 20
        best = -1.0
        for half_life in half_lives:
            solver = TransitionSolver(recency_rows(sequences, n_items, half_life, cfg.window, prefixes=True), targets)
            rows = recency_rows(sequences, n_items, half_life, cfg.window, prefixes=False)
            for lam in lambdas:
                weights = solver.weights(lam)
                if not choose:
                    self.weights, self.lam, self.half_life, self.user_rows = weights, lam, half_life, rows
                    return self
                self.weights, self.user_rows = weights, rows
                value = evaluate_scores(self.score, valid, known, n_items, ks=(k,))[metric]
                self.valid_history.append((half_life, lam, value))
                if value > best:
                    best, chosen = value, (weights, lam, half_life, rows)
        self.weights, self.lam, self.half_life, self.user_rows = chosen
        log.info("slit: best valid %s %.4f at half-life %g, lambda %g", metric, best, self.half_life, self.lam)
        return self

    def read_histories(self, interactions: pl.DataFrame) -> "SLIT":
        """Score users from their time-ordered `interactions` (ranking test after valid reads train + valid,
        as the feed does); B is unchanged."""
        assert self.user_rows is not None and self.half_life is not None and self.weights is not None, "call fit() first"
        n_users = max(self.user_rows.shape[0], int(interactions["user_index"].max() or 0) + 1 if interactions.height else 0)
        self.user_rows = recency_rows(user_sequences(interactions, n_users), self.weights.shape[0], self.half_life,
                                      self.config.window, prefixes=False)
        return self

    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.user_rows is not None and self.weights is not None, "call fit() first"
        history = self.user_rows[np.asarray(user_index_batch, dtype=np.int64)]
        return np.asarray(history @ self.weights, dtype=np.float32)
