"""Train/valid/test splits. Each returns the interactions with a `split` column.

- leave-last-out: per user, the last event is test and the one before is valid (temporal,
  the standard next-item protocol; users with < 3 events keep everything in train); equal
  timestamps are ordered by the source file (RecBole's rule) unless `tie_break="item-index"`.
- global temporal cut: everything after a time quantile is test (no user sees the future).
- predefined: keep the source's own split column (TikTok's published split).
- a refit's view (`fold_valid_into_train`): any of the above with valid relabelled train, once valid has chosen
  the epochs and settings (`train.refit`).
- cold items (`cold_item_split`): a random share of items is held out of train entirely (item
  cold start); warm items keep their split or get leave-last-out.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from recsys.data.schema import Dataset

SplitStrategy = Literal["leave-last-out", "temporal", "predefined"]
TieBreak = Literal["file-order", "item-index"]
TIE_BREAKS: tuple[str, ...] = ("file-order", "item-index")
TIME_ORDERED: tuple[str, ...] = ("leave-last-out", "temporal")  # every test event follows every valid one
HELD_OUT_SPLITS: tuple[str, ...] = ("valid", "test")


def leave_last_out(interactions: pl.DataFrame, n_valid: int = 1, n_test: int = 1,
                   tie_break: TieBreak = "file-order") -> pl.DataFrame:
    """Per user, the last event is test and the one before valid (users with < 3 events: all train).

    Tie rule (several events of a user at the same timestamp, e.g. 415 of ML-100K's 943 users at
    their last second): `file-order` (default) counts the later row of the source file as later,
    which is RecBole's rule (a stable sort by time), so figures compare with RecBole's on the same
    data; `item-index` counts the higher item index as later (this project's rule before, kept
    selectable to reproduce old figures). `interactions` must be in source-file order, as every
    loader returns them.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r} (expected one of: {', '.join(TIE_BREAKS)})")
    tie = pl.int_range(pl.len()) if tie_break == "file-order" else pl.col("item_index")
    ranked = interactions.with_columns(tie.alias("_tie")).with_columns(
        pl.int_range(pl.len()).over("user_index", order_by=["timestamp", "_tie"]).alias("_pos"),
        pl.len().over("user_index").alias("_n"),
    ).drop("_tie")
    from_end = pl.col("_n") - pl.col("_pos")  # 1 = last event
    enough = pl.col("_n") >= n_valid + n_test + 1
    split = (
        pl.when(enough & (from_end <= n_test)).then(pl.lit("test"))
        .when(enough & (from_end <= n_test + n_valid)).then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return ranked.with_columns(split.alias("split")).drop("_pos", "_n")


def global_temporal(interactions: pl.DataFrame, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> pl.DataFrame:
    assert 0 < valid_fraction + test_fraction < 1, "fractions must leave some training data"
    ts = interactions["timestamp"]
    test_cut = ts.quantile(1 - test_fraction, interpolation="lower")
    valid_cut = ts.quantile(1 - test_fraction - valid_fraction, interpolation="lower")
    split = (
        pl.when(pl.col("timestamp") > test_cut).then(pl.lit("test"))
        .when(pl.col("timestamp") > valid_cut).then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return interactions.with_columns(split.alias("split"))


def apply_split(dataset: Dataset, strategy: SplitStrategy | None = None, tie_break: TieBreak = "file-order") -> Dataset:
    """Return a copy of `dataset` with a `split` column; default: predefined if present, else leave-last-out.

    `tie_break` is the leave-last-out tie rule (see `leave_last_out`)."""
    if strategy is None:
        strategy = "predefined" if "split" in dataset.interactions.columns else "leave-last-out"
    inter = dataset.interactions
    if strategy == "predefined":
        assert "split" in inter.columns, f"{dataset.name} has no predefined split column"
        out = inter
    else:
        inter = inter.drop("split") if "split" in inter.columns else inter
        out = leave_last_out(inter, tie_break=tie_break) if strategy == "leave-last-out" else global_temporal(inter)
    from dataclasses import replace
    return replace(dataset, interactions=out)


def fold_valid_into_train(split_dataset: Dataset) -> Dataset:
    """`split_dataset` with every valid event relabelled train (rows keep their order): a refit's training data.

    Why: valid is labelled data, and on a time-ordered split the most recent a model can learn from; once it has
    chosen the epochs and settings, the served model may as well learn from it (`train.refit`). Test is
    untouched, and the run then ranks test from (and masks) train + valid, which is now its train. Nothing is
    left to choose on: a refit run has no valid split (evaluating one is refused)."""
    from dataclasses import replace
    inter = split_dataset.interactions
    assert "split" in inter.columns, f"{split_dataset.name} has no split column; call apply_split first"
    relabelled = inter.with_columns(
        pl.when(pl.col("split") == "valid").then(pl.lit("train")).otherwise(pl.col("split")).alias("split"))
    return replace(split_dataset, interactions=relabelled)


def known_before(split_dataset: Dataset, held_out: str, strategy: str) -> pl.DataFrame:
    """The interactions a feed has read when the `held_out` events happen: its input, and what it excludes.

    On a time-ordered split (leave-last-out, temporal) every test event comes after the user's valid
    events, so at test time the feed has read train + valid: that is the point-in-time history, and
    RecBole's test protocol (input and mask) on the leave-one-out split. Ranking `valid`, or either
    held-out set of a `predefined` split, reads train only (DiffMM's TikTok split holds one event per
    held-out user, its valid and test users disjoint: a test user has no valid event to read; its held-out
    events are nonetheless popular in another way than train's, `benchmarks/split_shift.py`). `split_dataset` is the dataset with `strategy` applied (`apply_split`); rows keep its order.
    """
    if held_out not in HELD_OUT_SPLITS:
        raise ValueError(f"unknown held-out split {held_out!r} (expected one of: {', '.join(HELD_OUT_SPLITS)})")
    reads = ("train", "valid") if held_out == "test" and strategy in TIME_ORDERED else ("train",)
    return split_dataset.interactions.filter(pl.col("split").is_in(reads))


def cold_item_split(interactions: pl.DataFrame, fraction: float = 0.1, seed: int = 0,
                    valid_share: float = 0.0) -> pl.DataFrame:
    """Item hold-out split: a random `fraction` of the items becomes cold (none of their interactions is in train).

    - cold items: `round(fraction * n_items)` distinct items drawn uniformly (seeded) from the items
      that occur in `interactions`. Every interaction with them is held out: with the default
      `valid_share=0` all go to `test` (epochs are then chosen on warm `valid` data only, as when a
      deployed model meets new items); with `valid_share > 0` that share of the cold *items* (all
      their interactions) goes to `valid` instead, so valid and test never share a cold item;
    - warm items: an existing `split` column is kept (e.g. TikTok's predefined split), otherwise
      leave-last-out over the warm interactions only (per user, the last warm event is test, the
      one before valid; users with < 3 warm events keep them all in train).

    Use it through `apply_split(dataset, "predefined")` after adding the column, so the held-out
    items have no trained ID row and are scored from content alone. Returns the interactions with
    a `split` column and a boolean `cold_item` column.
    """
    assert 0.0 < fraction < 1.0, "fraction must be in (0, 1)"
    assert 0.0 <= valid_share < 1.0, "valid_share must be in [0, 1)"
    items = np.unique(interactions["item_index"].to_numpy())
    n_cold = int(round(fraction * len(items)))
    assert 0 < n_cold < len(items), f"fraction {fraction} of {len(items)} items leaves no cold or no warm item"
    cold = np.random.default_rng(seed).permutation(items)[:n_cold]
    cold_valid = cold[:int(round(valid_share * n_cold))]
    marked = interactions.with_row_index("_row").with_columns(pl.col("item_index").is_in(cold.tolist()).alias("cold_item"))
    warm = marked.filter(~pl.col("cold_item"))
    if "split" not in warm.columns:
        warm = leave_last_out(warm)
    held = marked.filter(pl.col("cold_item")).with_columns(
        pl.when(pl.col("item_index").is_in(cold_valid.tolist())).then(pl.lit("valid")).otherwise(pl.lit("test"))
        .alias("split")).select(warm.columns)
    return pl.concat([warm, held]).sort("_row").drop("_row")
