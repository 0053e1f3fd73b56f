"""The `ranking` task: full-ranking top-K metrics overall, per media type and on cold items.

Built on `recsys.metrics` (the DiffMM protocol); this module only decides which held-out rows
form each group and shapes the report, so the metric definitions live in exactly one place.
"""
from __future__ import annotations

from typing import Any

import polars as pl

from recsys.metrics import ScoreFn, evaluate_scores, per_user_ranking_metrics, summarise
from training.evaluation_protocol import EvalSplit

KS = (10, 20)
PER_USER_COLUMNS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20")


def ranking_report(score_fn: ScoreFn, ev: EvalSplit) -> dict[str, Any]:
    """Overall metrics plus `by_media` (groups of held-out items by media type) and `cold_start`."""
    per_user, tops = per_user_ranking_metrics(score_fn, ev.held_out, ev.known, ev.n_items, KS)
    report: dict[str, Any] = summarise(per_user, tops, ev.n_items, KS)
    report["n_interactions"] = ev.held_out.height
    report["by_media"] = _by_media(score_fn, ev, overall=report)
    cold = ev.held_out.filter(pl.col("item_index").is_in(ev.cold_items.tolist()))
    if cold.height:
        cold_report = evaluate_scores(score_fn, cold, ev.known, ev.n_items, KS)
        cold_report.update(n_interactions=cold.height, n_cold_items=len(ev.cold_items), candidates="all items")
        report["cold_start"] = cold_report
    else:
        report["cold_start"] = {"n_interactions": 0, "n_cold_items": len(ev.cold_items)}
    return report


def _by_media(score_fn: ScoreFn, ev: EvalSplit, overall: dict[str, Any]) -> dict[str, dict[str, Any]]:
    labelled = ev.held_out.join(ev.item_media_type, on="item_index", how="left").filter(pl.col("media").is_not_null())
    out: dict[str, dict[str, Any]] = {}
    for media in sorted(labelled["media"].unique().to_list()):
        rows = labelled.filter(pl.col("media") == media)
        if rows.height == ev.held_out.height:  # one group covers everything: same numbers, no second pass
            group = {k: v for k, v in overall.items() if not isinstance(v, dict)}
        else:
            group = evaluate_scores(score_fn, rows, ev.known, ev.n_items, KS)
        group["n_interactions"] = rows.height
        out[media] = group
    return out


def per_user_frame(score_fn: ScoreFn, ev: EvalSplit) -> pl.DataFrame:
    """One row per evaluated user: user_id, n_train, media (dominant media type of their held-out
    items, null when none has media), recall@10, recall@20, ndcg@10, ndcg@20, mrr, hit_rate@20."""
    per_user, _ = per_user_ranking_metrics(score_fn, ev.held_out, ev.known, ev.n_items, KS)
    user_ids = ev.dataset.interactions.select("user_index", "user_id").unique("user_index")
    dominant = (
        ev.held_out.join(ev.item_media_type, on="item_index", how="left")
        .filter(pl.col("media").is_not_null())
        .group_by("user_index", "media").agg(pl.len().alias("_n"))
        .sort(["user_index", "_n", "media"], descending=[False, True, False])
        .unique("user_index", keep="first")
        .select("user_index", "media")
    )
    frame = (
        per_user.with_columns(pl.col("user_index").cast(pl.Int32))
        .join(user_ids, on="user_index", how="left")
        .join(ev.n_train.with_columns(pl.col("user_index").cast(pl.Int32)), on="user_index", how="left")
        .join(dominant.with_columns(pl.col("user_index").cast(pl.Int32)), on="user_index", how="left")
        .sort("user_index")
    )
    return frame.select(
        pl.col("user_id").cast(pl.String),
        pl.col("n_train").fill_null(0).cast(pl.Int64),
        pl.col("media").cast(pl.String),
        *[pl.col(c).cast(pl.Float64) for c in PER_USER_COLUMNS],
    )
