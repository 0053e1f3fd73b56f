"""The `cold-start` task: can the model retrieve items nobody interacted with during training?

Held-out interactions whose item has no train interaction are retrieved twice:
- **among cold items** (main figures): the candidates are exactly the items never seen in train.
  This is the meaningful comparison: a collaborative model or popularity cannot tell unseen items
  apart (popularity of every unseen item is 0, so popularity ranks them as one big tie and its
  expected recall equals random), while a content model can;
- **among all items** (`all_items`): full ranking with the user's known items masked (`EvalSplit.known`), as in production,
  where cold items also compete with the popular head.
`random_recall@K` is the exact expectation of a uniformly random ranking of the same candidates.

Top level also carries the feed's view (`recsys.new_items.NewItemPolicy`: new-item prior and
exploration slots, as serving applies them to new items): `all_items_recall@20` ranks the cold
interactions among all items under that policy, `random_all_items_recall@20` is a random
ranking's, and `warm_recall@20` / `warm_recall@20_policy` show what the policy costs the warm
test interactions (`warm_relative_loss`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from recsys.metrics import ScoreFn, evaluate_scores
from recsys.new_items import NewItemPolicy, gumbel_draws, slot_positions
from training.evaluation_protocol import EvalSplit

KS = (10, 20)
K = 20


def policy_score_fn(score_fn: ScoreFn, ev: EvalSplit, policy: NewItemPolicy, k: int = K, seed: int = 0) -> ScoreFn:
    """Scores whose top-k is the feed the policy serves: the top (k - slots) by score + boost for cold
    items (known items masked), with exploration draws among the remaining cold items at the slot
    positions. Items outside the list keep their boosted order below it."""
    cold = np.zeros(ev.n_items, dtype=bool)
    cold[ev.cold_items] = True
    known = ev.known.select("user_index", "item_index").unique().sort("user_index")
    users = known["user_index"].to_numpy()
    items = known["item_index"].to_numpy()
    starts = np.searchsorted(users, np.arange(int(users.max(initial=0)) + 2))
    slots = slot_positions(k, policy.share)
    rng = np.random.default_rng(seed)

    def score(batch: np.ndarray) -> np.ndarray:
        raw = np.array(score_fn(batch), dtype=np.float32, copy=True)
        for row, user in enumerate(np.asarray(batch)):
            if user + 1 < len(starts):
                raw[row, items[starts[user]:starts[user + 1]]] = -np.inf
        boosted = raw + np.float32(policy.boost) * cold
        n_ranked = k - len(slots)
        ranked = np.argsort(-boosted, axis=1, kind="stable")[:, :k]
        out = boosted - 10.0  # below every list position
        if slots and ev.cold_items.size:
            pool = raw[:, ev.cold_items].copy()
            for row in range(len(batch)):  # cold items already in the ranked part are not drawn again
                pool[row, np.isin(ev.cold_items, ranked[row, :n_ranked])] = -np.inf
            draws = ev.cold_items[gumbel_draws(pool, len(slots), policy.temperature, rng)]
            for row in range(len(batch)):
                final = list(ranked[row, :n_ranked])
                for position, item in zip(slots, draws[row]):
                    final.insert(position, int(item))
                out[row, final[:k]] = 1e6 - np.arange(len(final[:k]), dtype=np.float32)
        else:
            rows = np.arange(len(batch))[:, None]
            out[rows, ranked] = 1e6 - np.arange(k, dtype=np.float32)[None, :]
        return out

    return score


def feed_policy_report(score_fn: ScoreFn, ev: EvalSplit, policy: NewItemPolicy) -> dict[str, Any]:
    """The feed's view of cold and warm held-out interactions under `policy` (see module docstring)."""
    cold_list = ev.cold_items.tolist()
    rows = ev.held_out.filter(pl.col("item_index").is_in(cold_list))
    warm = ev.held_out.filter(~pl.col("item_index").is_in(cold_list))
    with_policy = policy_score_fn(score_fn, ev, policy)
    out: dict[str, Any] = {"feed_policy": {"boost": policy.boost, "explore_share": policy.share,
                                           "temperature": policy.temperature, "slots_of_20": len(slot_positions(K, policy.share))}}
    if rows.height:
        out[f"all_items_recall@{K}"] = evaluate_scores(with_policy, rows, ev.known, ev.n_items, KS)[f"recall@{K}"]
        out[f"random_all_items_recall@{K}"] = _random_recall(rows, ev, candidates=None)
    if warm.height:
        base = evaluate_scores(score_fn, warm, ev.known, ev.n_items, KS)[f"recall@{K}"]
        served = evaluate_scores(with_policy, warm, ev.known, ev.n_items, KS)[f"recall@{K}"]
        out.update({f"warm_recall@{K}": base, f"warm_recall@{K}_policy": served,
                    "warm_relative_loss": (base - served) / base if base > 0 else 0.0})
    return out


def cold_start_report(score_fn: ScoreFn, ev: EvalSplit, policy: NewItemPolicy | None = None) -> dict[str, Any]:
    cold_items = ev.cold_items
    rows = ev.held_out.filter(pl.col("item_index").is_in(cold_items.tolist()))
    report: dict[str, Any] = {
        "split": ev.split, "candidates": "cold items (never in train)", "n_cold_items": int(len(cold_items)),
        "n_interactions": rows.height, "n_users": int(rows["user_index"].n_unique()),
    }
    if rows.height == 0:
        report["note"] = "no held-out interaction has a cold item; nothing to evaluate"
        return report
    among_cold = evaluate_scores(score_fn, rows, ev.known, ev.n_items, KS, candidate_items=cold_items)
    among_all = evaluate_scores(score_fn, rows, ev.known, ev.n_items, KS)
    pop_all = evaluate_scores(lambda b: np.tile(ev.popularity, (len(b), 1)), rows, ev.known, ev.n_items, KS)
    random_cold = _random_recall(rows, ev, candidates=cold_items)
    report.update({f"recall@{K}": among_cold[f"recall@{K}"], f"ndcg@{K}": among_cold[f"ndcg@{K}"],
                   "recall@10": among_cold["recall@10"], "ndcg@10": among_cold["ndcg@10"],
                   f"popularity_recall@{K}": random_cold,  # all cold popularities are 0: a tie
                   f"random_recall@{K}": random_cold})
    report["all_items"] = {f"recall@{K}": among_all[f"recall@{K}"], f"ndcg@{K}": among_all[f"ndcg@{K}"],
                           f"popularity_recall@{K}": pop_all[f"recall@{K}"],
                           f"random_recall@{K}": _random_recall(rows, ev, candidates=None)}
    report.update(feed_policy_report(score_fn, ev, policy or NewItemPolicy()))
    report["note"] = ("popularity of every cold item is 0, so among cold items popularity is a tie and its "
                      "expected recall equals random_recall; all_items_recall@20 is the feed's view with "
                      "the new-item policy (recsys.new_items)")
    return report


def _random_recall(rows: pl.DataFrame, ev: EvalSplit, candidates: np.ndarray | None, k: int = K) -> float:
    """Mean over users of min(k, C_u) / C_u: each held-out item lands in a random top k with that probability.

    C_u = candidates left after masking the user's known items (`EvalSplit.known`).
    """
    users = rows.select("user_index").unique()
    masked = ev.known.select("user_index", "item_index").unique()
    if candidates is not None:
        masked = masked.filter(pl.col("item_index").is_in(candidates.tolist()))
    n_cand = len(candidates) if candidates is not None else ev.n_items
    counts = users.join(masked.group_by("user_index").agg(pl.len().alias("_m")), on="user_index", how="left")
    left = n_cand - counts["_m"].fill_null(0).to_numpy()
    left = np.maximum(left, 1)
    return float(np.mean(np.minimum(k, left) / left))
