"""Train/valid/test splits. Each returns the interactions with a `split` column.

- leave-last-out: per user, the last event is test and the one before is valid (temporal,
  the standard next-item protocol; users with < 3 events keep everything in train).
- global temporal cut: everything after a time quantile is test (no user sees the future).
- predefined: keep the source's own split column (TikTok's published split).
"""
from __future__ import annotations

from typing import Literal

import polars as pl

from recsys.data.schema import Dataset

SplitStrategy = Literal["leave-last-out", "temporal", "predefined"]


def leave_last_out(interactions: pl.DataFrame, n_valid: int = 1, n_test: int = 1) -> pl.DataFrame:
    ranked = interactions.with_columns(
        pl.int_range(pl.len()).over("user_index", order_by=["timestamp", "item_index"]).alias("_pos"),
        pl.len().over("user_index").alias("_n"),
    )
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


def apply_split(dataset: Dataset, strategy: SplitStrategy | None = None) -> Dataset:
    """Return a copy of `dataset` with a `split` column; default: predefined if present, else leave-last-out."""
    if strategy is None:
        strategy = "predefined" if "split" in dataset.interactions.columns else "leave-last-out"
    inter = dataset.interactions
    if strategy == "predefined":
        assert "split" in inter.columns, f"{dataset.name} has no predefined split column"
        out = inter
    else:
        inter = inter.drop("split") if "split" in inter.columns else inter
        out = leave_last_out(inter) if strategy == "leave-last-out" else global_temporal(inter)
    from dataclasses import replace
    return replace(dataset, interactions=out)
