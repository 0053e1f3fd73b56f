"""BPR-MF (Rendle et al. 2009): matrix factorisation trained to rank a consumed item above a
random one. The standard collaborative baseline of the multimodal-recommendation literature
(DiffMM's "MF-BPR"), so our numbers can be read against the published table.

One uniform negative per positive per epoch, rejected if the user consumed it; L2 on the
embeddings of the batch (not on the whole table, so rare users/items are not over-shrunk).
Sparse embedding gradients + lazy Adam touch only the rows of the batch, which is what makes
CPU training take seconds, not minutes. Fully seeded: same config and data, same vectors.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recsys.baselines.base import n_users_of
from recsys.data.schema import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BPRConfig:
    dim: int = 64
    lr: float = 1e-3
    reg: float = 1e-4         # L2 weight on the batch's user, positive and negative embeddings
    epochs: int = 100
    batch_size: int = 2048
    init_std: float = 0.1
    seed: int = 0
    threads: int = 1          # intra-op threads while fitting; tiny batches run slower on more


class BPRMF(torch.nn.Module):
    """User and item embedding tables; score(u, i) = <p_u, q_i>.

    Example::

        bpr = BPRMF(BPRConfig(dim=64, epochs=100)).fit(ds, ds.split("train"))
        top = bpr.score(np.array([0])).argsort()[0, ::-1][:20]
    """

    name = "bpr-mf"

    def __init__(self, config: BPRConfig | None = None, **overrides: float) -> None:
        super().__init__()
        base = config or BPRConfig()
        self.config = BPRConfig(**{**base.__dict__, **overrides})
        self.users: torch.nn.Embedding | None = None
        self.items: torch.nn.Embedding | None = None

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "BPRMF":
        cfg = self.config
        with _threads(cfg.threads):
            return self._fit(dataset, train_interactions)

    def _fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "BPRMF":
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_users, n_items = n_users_of(dataset, train_interactions), dataset.n_items
        self.users = torch.nn.Embedding(n_users, cfg.dim, sparse=True)
        self.items = torch.nn.Embedding(n_items, cfg.dim, sparse=True)
        torch.nn.init.normal_(self.users.weight, std=cfg.init_std)
        torch.nn.init.normal_(self.items.weight, std=cfg.init_std)
        pairs = train_interactions.select("user_index", "item_index").unique().sort("user_index", "item_index")
        users = pairs["user_index"].to_numpy().astype(np.int64)
        pos = pairs["item_index"].to_numpy().astype(np.int64)
        seen = np.sort(users * n_items + pos)
        optimiser = torch.optim.SparseAdam(list(self.parameters()), lr=cfg.lr)
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(users))
            neg = sample_negatives(users[order], seen, n_items, rng)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = self._loss(torch.from_numpy(users[idx]), torch.from_numpy(pos[idx]),
                                  torch.from_numpy(neg[start:start + cfg.batch_size]))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(idx)
            log.debug("bpr-mf epoch %d loss %.4f", epoch + 1, total / len(order))
        return self

    def _loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        pu, qi, qj = self.users(u), self.items(i), self.items(j)
        margin = (pu * (qi - qj)).sum(1)
        l2 = (pu.pow(2).sum(1) + qi.pow(2).sum(1) + qj.pow(2).sum(1)).mean()
        return -torch.nn.functional.logsigmoid(margin).mean() + self.config.reg * l2

    @torch.no_grad()
    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.users is not None and self.items is not None, "call fit() first"
        u = self.users.weight[torch.as_tensor(np.asarray(user_index_batch), dtype=torch.long)]
        return (u @ self.items.weight.T).numpy().astype(np.float32, copy=False)

    def user_vectors(self) -> np.ndarray:
        assert self.users is not None, "call fit() first"
        return self.users.weight.detach().numpy().copy()

    def item_vectors(self) -> np.ndarray:
        assert self.items is not None, "call fit() first"
        return self.items.weight.detach().numpy().copy()


def sample_negatives(users: np.ndarray, seen_sorted: np.ndarray, n_items: int, rng: np.random.Generator,
                     max_rounds: int = 10) -> np.ndarray:
    """One uniform item per user that the user has not consumed.

    `seen_sorted` holds the sorted keys user * n_items + item of train pairs. Vectorised
    rejection sampling; the rare rows still colliding after `max_rounds` (users who consumed most
    of the catalogue) draw from their unconsumed items explicitly. A user who consumed every item
    keeps a consumed one (there is no negative to give).
    """
    neg = rng.integers(0, n_items, size=len(users))
    clash = _is_seen(users, neg, seen_sorted, n_items)
    for _ in range(max_rounds):
        if not clash.any():
            return neg
        neg[clash] = rng.integers(0, n_items, size=int(clash.sum()))
        clash = _is_seen(users, neg, seen_sorted, n_items)
    for row in np.flatnonzero(clash):
        lo, hi = np.searchsorted(seen_sorted, [users[row] * n_items, (users[row] + 1) * n_items])
        free = np.setdiff1d(np.arange(n_items), seen_sorted[lo:hi] - users[row] * n_items)
        if len(free):
            neg[row] = rng.choice(free)
    return neg


def _is_seen(users: np.ndarray, items: np.ndarray, seen_sorted: np.ndarray, n_items: int) -> np.ndarray:
    if len(seen_sorted) == 0:
        return np.zeros(len(users), dtype=bool)
    keys = users * n_items + items
    pos = np.searchsorted(seen_sorted, keys).clip(max=len(seen_sorted) - 1)
    return seen_sorted[pos] == keys


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
