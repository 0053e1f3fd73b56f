"""GF-CF (Shen et al., CIKM 2021): a training-free graph filter, the LightGCN family's closed form.

Why it is here: LightGCN's trained embeddings act as a low-pass filter on the normalised user-item graph;
GF-CF applies that filter directly, with no epochs. On the large sparse graph-CF benchmarks (Gowalla, Yelp2018,
Amazon-Book) it ranks level with or above LightGCN at a few minutes of CPU, so it is the "LightGCN-class"
peer that can actually be run to convergence on this machine, and EASE cannot (a dense n_items^2 inverse).

With R the binary user x item matrix and D_U, D_I its row and column degrees, R~ = D_U^-1/2 R D_I^-1/2; a
user with history row r scores items as

    s = r . R~^T R~  +  alpha . r . D_I^-1/2 V_k V_k^T D_I^1/2

the first term the linear filter (LightGCN's propagation in closed form), the second the ideal low-pass filter
over R~'s top-k right singular vectors V_k. `alpha` and `k` are chosen on `valid` (NDCG@20), as EASE chooses
its lambda; without valid the paper's Gowalla setting (alpha .3, k 256) is used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from recsys.baselines.base import ReadsHistories, interaction_matrix, n_users_of
from recsys.baselines.selection import valid_split
from recsys.data.schema import Dataset
from recsys.metrics import evaluate_scores
from recsys.models.graph import InteractionGraph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GFCFConfig:
    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)  # weights of the ideal low-pass term tried on valid
    ranks: tuple[int, ...] = (64, 256)                 # its numbers of singular vectors tried on valid
    alpha: float | None = None                          # fixed settings (skip the search)
    rank: int | None = None
    seed: int = 0                                       # the randomised SVD's seed


def propagation_matrix(user_items: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """(R~ = D_U^-1/2 R D_I^-1/2, the item degrees D_I): LightGCN's own normalised graph
    (`InteractionGraph.from_pairs`, which the LightGCN baseline and the towers propagate over)."""
    coo = user_items.tocoo()
    graph = InteractionGraph.from_pairs(coo.row, coo.col, *user_items.shape)
    return graph.user_item.matrix, graph.item_degree


def inverse_root(degrees: np.ndarray) -> np.ndarray:
    """D^-1/2 as a vector, 0 where the degree is 0 (an item without train events scores nothing)."""
    out = np.zeros_like(degrees, dtype=np.float32)
    out[degrees > 0] = degrees[degrees > 0] ** -0.5
    return out


def right_singular(matrix: sp.csr_matrix, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """((n_items, rank) top right singular vectors, their singular values) by a seeded randomised SVD.

    Randomised (torch.svd_lowrank with power iterations) because an exact sparse SVD of rank 1,024 on a
    30k x 40k graph is many minutes (the randomised one: 80 s on one core); the seed makes the fit
    reproducible on one machine, without moving the caller's random stream."""
    rank = max(1, min(int(rank), min(matrix.shape) - 1))
    sketch = min(rank + max(10, rank // 10), min(matrix.shape))  # oversampled (Halko et al.), then cut to `rank`
    coo = matrix.tocoo()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    sparse = torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data, dtype=torch.float32), matrix.shape,
                                     check_invariants=False).coalesce()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, spread, right = torch.svd_lowrank(sparse, q=sketch, niter=4)
    return right[:, :rank].numpy().astype(np.float32), spread[:rank].numpy().astype(np.float32)


class GFCF(ReadsHistories):
    """Training-free linear + ideal low-pass graph filter.

    Example::

        gfcf = GFCF().fit(ds, ds.split("train"))
        top = gfcf.score(np.array([0])).argsort()[0, ::-1][:20]
    """

    name = "gf-cf"

    def __init__(self, config: GFCFConfig | None = None, **overrides: object) -> None:
        base = config or GFCFConfig()
        self.config = GFCFConfig(**{**base.__dict__, **overrides})  # type: ignore[arg-type]
        self.user_items: sp.csr_matrix | None = None
        self.normalised: sp.csr_matrix | None = None
        self.item_degree: np.ndarray | None = None
        self.vectors: np.ndarray | None = None  # (n_items, max rank) right singular vectors of R~
        self.alpha: float = 0.3
        self.rank: int = 256
        self.valid_history: list[tuple[float, int, float]] = []  # (alpha, rank, valid NDCG@20)

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "GFCF":
        x = interaction_matrix(train_interactions, n_users_of(dataset, train_interactions), dataset.n_items)
        return self.fit_matrix(x, valid_split(dataset), train_interactions)

    def fit_matrix(self, user_items: sp.csr_matrix, valid: pl.DataFrame | None, known: pl.DataFrame,
                   metric: str = "ndcg@20") -> "GFCF":
        """Fit on a binary user x item matrix; alpha and rank chosen on `valid` by `metric` (`known` masked)."""
        cfg = self.config
        self.user_items = user_items.tocsr().astype(np.float32)
        self.normalised, self.item_degree = propagation_matrix(self.user_items)
        ranks = (cfg.rank,) if cfg.rank is not None else cfg.ranks
        alphas = (cfg.alpha,) if cfg.alpha is not None else cfg.alphas
        self.vectors = right_singular(self.normalised, max(ranks), cfg.seed)[0]
        if valid is None or not valid.height or (len(ranks) == 1 and len(alphas) == 1):
            self.alpha = alphas[0] if len(alphas) == 1 else 0.3  # nothing to choose on: the paper's setting
            self.rank = min(ranks[0] if len(ranks) == 1 else 256, self.vectors.shape[1])
            return self
        k = int(metric.split("@")[1]) if "@" in metric else 20
        best, choice = -1.0, (alphas[0], ranks[0])
        for rank in ranks:
            for alpha in alphas:
                if alpha == 0.0 and rank != ranks[0]:
                    continue  # the linear filter alone does not depend on the rank
                self.alpha, self.rank = alpha, min(rank, self.vectors.shape[1])
                value = evaluate_scores(self.score, valid, known, user_items.shape[1], ks=(k,))[metric]
                self.valid_history.append((alpha, rank, value))
                if value > best:
                    best, choice = value, (alpha, self.rank)
        self.alpha, self.rank = choice
        log.info("gf-cf: best valid %s %.4f at alpha %g, rank %d", metric, best, self.alpha, self.rank)
        return self

    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.user_items is not None and self.normalised is not None, "call fit() first"
        history = self.user_items[np.asarray(user_index_batch, dtype=np.int64)]
        linear = np.asarray(((history @ self.normalised.T) @ self.normalised).todense(), dtype=np.float32)
        if self.alpha == 0.0:
            return linear
        assert self.vectors is not None and self.item_degree is not None
        basis = self.vectors[:, :self.rank]
        scaled = np.asarray(history.multiply(inverse_root(self.item_degree)[None, :]).todense(), dtype=np.float32)
        low_pass = (scaled @ basis) @ (basis.T * np.sqrt(self.item_degree)[None, :])
        return linear + self.alpha * low_pass


def factored_filter(user_items: sp.csr_matrix, rank: int, alpha: float = 0.3, low_pass: int = 256,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """GF-CF as a two-tower: (history table H, item table V), each (n_items, rank + low_pass), with the user's
    score sum_{i in history} H[i] . V[j].

    The exact linear filter R~^T R~ is not low-rank, so the two-tower form keeps its top `rank` singular
    directions, V_r S_r V_r^T (S_r rather than S_r^2: with the spectrum cut, flattening it ranks better; Gowalla
    valid N@20 at rank 1024: .1097 against .1077), beside the ideal low-pass term as in the exact filter:
    H = [V_r S_r, alpha D_I^-1/2 V_k], V = [V_r, D_I^1/2 V_k].
    """
    normalised, item_degree = propagation_matrix(user_items)
    vectors, spread = right_singular(normalised, max(rank, low_pass), seed)
    rank, low_pass = min(rank, vectors.shape[1]), min(low_pass, vectors.shape[1])
    linear, smooth = vectors[:, :rank], vectors[:, :low_pass]
    history = np.hstack([linear * spread[None, :rank], alpha * inverse_root(item_degree)[:, None] * smooth])
    items = np.hstack([linear, np.sqrt(item_degree)[:, None] * smooth])
    return history.astype(np.float32), items.astype(np.float32)
