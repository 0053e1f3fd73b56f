"""Full-ranking top-K metrics, the protocol every model and baseline is judged by.

For each evaluated user, every item is scored, the user's masked items (their train items in
the published TikTok protocol) are removed, and the top K are compared with the user's held-out
items. Definitions follow DiffMM's `Main.py`: Recall@K = hits / |held-out items|; NDCG@K uses an
ideal DCG over min(|held-out|, K) positions; metrics are averaged over users with >= 1 held-out
item. MRR is the reciprocal full-list rank of the best-ranked held-out item.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl
import torch

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user_index batch -> (batch, n_items) scores
METRIC_NAMES = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20")


def _csr(pairs: pl.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, item indices) of a (user_index, item_index) frame, for fast per-user slicing."""
    pairs = pairs.select("user_index", "item_index").unique().sort("user_index", "item_index")
    users = pairs["user_index"].to_numpy()
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return np.cumsum(indptr), pairs["item_index"].to_numpy().astype(np.int64)


def per_user_ranking_metrics(score_fn: ScoreFn, held_out: pl.DataFrame, masked: pl.DataFrame, n_items: int,
                             ks: tuple[int, ...] = (10, 20), batch_size: int = 1024,
                             candidate_items: np.ndarray | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """Per-user metrics plus the concatenated top-max(K) lists (for coverage).

    Args:
        held_out: (user_index, item_index) pairs to retrieve, e.g. the test split.
        masked: pairs never to recommend (the user's train items); they are ranked last.
        candidate_items: restrict ranking to these item indices (e.g. cold-start items); None = all.
    """
    users = np.unique(held_out["user_index"].to_numpy())
    n_users = int(max(users.max(initial=0), masked["user_index"].max() or 0)) + 1
    pos_ptr, pos_items = _csr(held_out, n_users)
    mask_ptr, mask_items = _csr(masked, n_users)
    allowed = None
    if candidate_items is not None:
        allowed = torch.zeros(n_items, dtype=torch.bool)
        allowed[torch.as_tensor(candidate_items, dtype=torch.long)] = True
    kmax = max(ks)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in ("user_index", "n_held_out", "mrr",
                                                               *[f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hit_rate")])}
    tops: list[np.ndarray] = []
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64))
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = torch.as_tensor(np.asarray(score_fn(batch)), dtype=torch.float32).clone()
        assert scores.shape == (len(batch), n_items), f"score_fn returned {tuple(scores.shape)}, expected {(len(batch), n_items)}"
        mrows, mcols = _gather(batch, mask_ptr, mask_items)
        scores[mrows, mcols] = -torch.inf
        if allowed is not None:
            scores[:, ~allowed] = -torch.inf
        prows, pcols = _gather(batch, pos_ptr, pos_items)
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[prows, pcols] = True
        top = torch.topk(scores, kmax, dim=1).indices
        tops.append(top.numpy())
        hits = torch.gather(relevant, 1, top).double()
        n_pos = relevant.sum(1).double()
        best_pos = torch.where(relevant, scores, torch.tensor(-torch.inf)).max(1).values
        rank = (scores > best_pos[:, None]).sum(1).double() + 1
        rows["user_index"].append(batch)
        rows["n_held_out"].append(n_pos.numpy().astype(np.int64))
        rows["mrr"].append((1.0 / rank).numpy())
        for k in ks:
            hk = hits[:, :k]
            ideal = torch.stack([discounts[: int(min(n, k))].sum() for n in n_pos])
            rows[f"recall@{k}"].append((hk.sum(1) / n_pos).numpy())
            rows[f"ndcg@{k}"].append(((hk * discounts[:k]).sum(1) / ideal).numpy())
            rows[f"hit_rate@{k}"].append((hk.sum(1) > 0).double().numpy())
    frame = pl.DataFrame({name: np.concatenate(parts) if parts else np.array([]) for name, parts in rows.items()})
    return frame, (np.concatenate(tops) if tops else np.zeros((0, kmax), dtype=np.int64))


def _gather(batch: np.ndarray, indptr: np.ndarray, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    starts, ends = indptr[batch], indptr[batch + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(batch)), counts)
    cols = items[np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])] if counts.sum() else np.zeros(0, np.int64)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def summarise(per_user: pl.DataFrame, top_lists: np.ndarray, n_items: int, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """Average per-user metrics and add catalogue coverage@K (share of items in anyone's top K)."""
    out = {name: float(per_user[name].mean()) for name in per_user.columns if name not in ("user_index", "n_held_out")}
    for k in ks:
        out[f"coverage@{k}"] = float(len(np.unique(top_lists[:, :k])) / n_items) if len(top_lists) else 0.0
    out["n_users"] = per_user.height
    return out


def evaluate_scores(score_fn: ScoreFn, held_out: pl.DataFrame, masked: pl.DataFrame, n_items: int,
                    ks: tuple[int, ...] = (10, 20), candidate_items: np.ndarray | None = None) -> dict[str, float]:
    per_user, tops = per_user_ranking_metrics(score_fn, held_out, masked, n_items, ks, candidate_items=candidate_items)
    return summarise(per_user, tops, n_items if candidate_items is None else len(candidate_items), ks)


def dot_product_scorer(user_vectors: np.ndarray, item_vectors: np.ndarray, item_prior: np.ndarray | None = None) -> ScoreFn:
    """Score function of a two-tower model: user vector · item vector (both precomputed), plus an
    optional per-item additive prior (the served new-item prior, `recsys.new_items`)."""
    items_t = torch.as_tensor(item_vectors, dtype=torch.float32)
    users_t = torch.as_tensor(user_vectors, dtype=torch.float32)
    prior_t = torch.as_tensor(item_prior, dtype=torch.float32) if item_prior is not None else None

    def score(batch: np.ndarray) -> np.ndarray:
        scores = users_t[torch.as_tensor(batch, dtype=torch.long)] @ items_t.T
        return (scores + prior_t if prior_t is not None else scores).numpy()

    return score
