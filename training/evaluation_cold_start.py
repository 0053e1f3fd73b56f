"""The `cold-start` task: can the model retrieve items nobody interacted with during training?

Held-out interactions whose item has no train interaction are retrieved twice:
- **among cold items** (main figures): the candidates are exactly the items never seen in train.
  This is the meaningful comparison: a collaborative model or popularity cannot tell unseen items
  apart (popularity of every unseen item is 0, so popularity ranks them as one big tie and its
  expected recall equals random), while a content model can;
- **among all items** (`all_items`): full ranking with train items masked, as in production,
  where cold items also compete with the popular head.
`random_recall@K` is the exact expectation of a uniformly random ranking of the same candidates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from recsys.metrics import ScoreFn, evaluate_scores
from training.evaluation_protocol import EvalSplit

KS = (10, 20)
K = 20


def cold_start_report(score_fn: ScoreFn, ev: EvalSplit) -> dict[str, Any]:
    cold_items = ev.cold_items
    rows = ev.held_out.filter(pl.col("item_index").is_in(cold_items.tolist()))
    report: dict[str, Any] = {
        "split": ev.split, "candidates": "cold items (never in train)", "n_cold_items": int(len(cold_items)),
        "n_interactions": rows.height, "n_users": int(rows["user_index"].n_unique()),
    }
    if rows.height == 0:
        report["note"] = "no held-out interaction has a cold item; nothing to evaluate"
        return report
    among_cold = evaluate_scores(score_fn, rows, ev.train, ev.n_items, KS, candidate_items=cold_items)
    among_all = evaluate_scores(score_fn, rows, ev.train, ev.n_items, KS)
    pop_all = evaluate_scores(lambda b: np.tile(ev.popularity, (len(b), 1)), rows, ev.train, ev.n_items, KS)
    random_cold = _random_recall(rows, ev, candidates=cold_items)
    report.update({f"recall@{K}": among_cold[f"recall@{K}"], f"ndcg@{K}": among_cold[f"ndcg@{K}"],
                   "recall@10": among_cold["recall@10"], "ndcg@10": among_cold["ndcg@10"],
                   f"popularity_recall@{K}": random_cold,  # all cold popularities are 0: a tie
                   f"random_recall@{K}": random_cold})
    report["all_items"] = {f"recall@{K}": among_all[f"recall@{K}"], f"ndcg@{K}": among_all[f"ndcg@{K}"],
                           f"popularity_recall@{K}": pop_all[f"recall@{K}"],
                           f"random_recall@{K}": _random_recall(rows, ev, candidates=None)}
    report["note"] = ("popularity of every cold item is 0, so among cold items popularity is a tie and its "
                      "expected recall equals random_recall")
    return report


def _random_recall(rows: pl.DataFrame, ev: EvalSplit, candidates: np.ndarray | None, k: int = K) -> float:
    """Mean over users of min(k, C_u) / C_u: each held-out item lands in a random top k with that probability.

    C_u = candidates left after masking the user's train items (cold candidates are never masked).
    """
    users = rows.select("user_index").unique()
    masked = ev.train.select("user_index", "item_index").unique()
    if candidates is not None:
        masked = masked.filter(pl.col("item_index").is_in(candidates.tolist()))
    n_cand = len(candidates) if candidates is not None else ev.n_items
    counts = users.join(masked.group_by("user_index").agg(pl.len().alias("_m")), on="user_index", how="left")
    left = n_cand - counts["_m"].fill_null(0).to_numpy()
    left = np.maximum(left, 1)
    return float(np.mean(np.minimum(k, left) / left))
