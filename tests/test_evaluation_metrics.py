"""The full-ranking metrics give the hand-computed values of the DiffMM protocol."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys.metrics import evaluate_scores, per_user_ranking_metrics, summarise


def pairs(rows: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user_index": pl.Int32, "item_index": pl.Int32}, orient="row")


def fixed_scores(matrix: list[list[float]]):
    table = np.asarray(matrix, dtype=np.float32)
    return lambda batch: table[np.asarray(batch)]


# 6 items; scores fall with the index (item 0 ranks first) unless stated.
DESCENDING = [[6, 5, 4, 3, 2, 1]] * 3


def test_single_held_out_item_at_rank_three_gives_textbook_values():
    per_user, _ = per_user_ranking_metrics(fixed_scores(DESCENDING), pairs([(0, 2)]), pairs([]), 6, ks=(2, 5))
    row = per_user.row(0, named=True)
    assert row["recall@2"] == 0 and row["recall@5"] == 1
    assert row["ndcg@5"] == pytest.approx(1 / math.log2(4))
    assert row["mrr"] == pytest.approx(1 / 3)
    assert row["hit_rate@2"] == 0 and row["hit_rate@5"] == 1


def test_masked_train_items_are_never_recommended_and_do_not_count_as_rank():
    # Items 0 and 1 are the user's train items: the held-out item 2 moves from rank 3 to rank 1.
    per_user, tops = per_user_ranking_metrics(fixed_scores(DESCENDING), pairs([(0, 2)]), pairs([(0, 0), (0, 1)]), 6, ks=(1, 3))
    row = per_user.row(0, named=True)
    assert row["recall@1"] == 1 and row["ndcg@1"] == 1 and row["mrr"] == 1
    assert not {0, 1} & set(tops[0].tolist())


def test_masking_is_per_user_only():
    # User 1's train item 0 must not be masked for user 0.
    per_user, _ = per_user_ranking_metrics(fixed_scores(DESCENDING), pairs([(0, 0), (1, 2)]), pairs([(1, 0)]), 6, ks=(1,))
    assert per_user["recall@1"].to_list() == [1.0, 0.0]


def test_ideal_dcg_uses_min_of_held_out_count_and_k():
    # 3 held-out items, the top 2 are two of them: at K=2 the ideal has only 2 positions, so NDCG@2 = 1.
    per_user, _ = per_user_ranking_metrics(fixed_scores(DESCENDING), pairs([(0, 0), (0, 1), (0, 5)]), pairs([]), 6, ks=(2, 6))
    row = per_user.row(0, named=True)
    assert row["ndcg@2"] == pytest.approx(1.0)
    assert row["recall@2"] == pytest.approx(2 / 3)
    ideal6 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert row["ndcg@6"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / ideal6)
    assert row["mrr"] == 1.0


def test_averages_are_over_users_not_interactions():
    # User 0: 1 of 1 found; user 1: 0 of 3 found -> mean recall 0.5 (not 1/4).
    scores = fixed_scores([[6, 5, 4, 3, 2, 1], [6, 5, 4, 3, 2, 1]])
    report = evaluate_scores(scores, pairs([(0, 0), (1, 3), (1, 4), (1, 5)]), pairs([]), 6, ks=(1,))
    assert report["recall@1"] == pytest.approx(0.5)
    assert report["n_users"] == 2


def test_coverage_counts_distinct_items_in_all_top_lists():
    scores = fixed_scores([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]])
    per_user, tops = per_user_ranking_metrics(scores, pairs([(0, 0), (1, 5)]), pairs([]), 6, ks=(2,))
    assert summarise(per_user, tops, 6, ks=(2,))["coverage@2"] == pytest.approx(4 / 6)


def test_candidate_items_restrict_the_ranking():
    # Only items {3, 4} compete: item 4 is second of two.
    report = evaluate_scores(fixed_scores(DESCENDING), pairs([(0, 4)]), pairs([]), 6, ks=(1, 2),
                             candidate_items=np.array([3, 4]))
    assert report["recall@1"] == 0 and report["recall@2"] == 1
    assert report["mrr"] == pytest.approx(0.5)
