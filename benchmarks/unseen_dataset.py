"""Build a dataset the project's configs were never tuned for, from ML-100K's (or TikTok's) interactions.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/unseen_dataset.py --out artifacts/unseen/ml100k-random

Why: the generalisation target ("a dataset without a config must beat MostPopular, ItemKNN and a
LightGCN-class model") needs data nobody tuned on. This script derives one that differs from the
tuned ML-100K task in everything a recipe could have been fitted to:
- interactions only (no titles, no genres: no text medium), like the Amazon review data;
- new opaque ids (`u<n>`, `i<n>` in a shuffled order), so no registered name or config matches;
- a random per-user 80/10/10 split (MMRec's protocol) instead of leave-last-out, so recency is
  not what the task rewards and the held-out sets hold ~10 items per user, not one;
- optionally a subsample of users (`--user-fraction`), which changes size and density;
- optionally a thinned, sparse next-item task (`--keep-fraction 0.15 --next-item`): each user keeps a
  random share of their events (at least 5), and no split column is written, so the loader's
  leave-last-out split applies (the shape of Amazon-review data: ~15 events per user, timestamps);
- a thinned random-split dataset (`--keep-fraction 0.15`, split column kept): sparse (train
  density ~.008, under the recipe's .01 threshold) but without a next-item order;
- `--source tiktok`: TikTok's interactions re-split at random per user, without its media, its
  ids, its DiffMM split or any timestamp column (TikTok's are synthetic: file order), so the
  recipe's sparse regime meets TikTok's *shape* (density ~.001, median 5 events per user) but none
  of what `configs/tiktok.toml` was tuned on.
The result is a generic folder dataset (`items.csv`, `interactions.csv` with a `split` column),
loaded by `recsys.data.tabular`; it lives outside the repository (licence: no redistribution).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data import load_dataset


SOURCES = ("ml-100k", "tiktok")


def random_per_user_split(inter: pl.DataFrame, rng: np.random.Generator, user: str,
                          valid: float = 0.1, test: float = 0.1) -> pl.DataFrame:
    """Add a `split` column: per user a random order, the first `test` share is test, the next `valid` share valid.

    MMRec's protocol: each user with >= 3 events gives at least one to test and one to valid (the
    shares are rounded); shorter histories stay in train. Helper columns are dropped again.
    """
    inter = inter.with_columns(pl.Series("_r", rng.random(inter.height)))
    inter = inter.with_columns(pl.col("_r").rank("ordinal").over(user).alias("_pos"), pl.len().over(user).alias("_n"))
    n_test = pl.max_horizontal((pl.col("_n") * test).round(0), pl.lit(1)).cast(pl.Int64)
    n_valid = pl.max_horizontal((pl.col("_n") * valid).round(0), pl.lit(1)).cast(pl.Int64)
    enough = pl.col("_n") >= 3
    split = (pl.when(enough & (pl.col("_pos") <= n_test)).then(pl.lit("test"))
             .when(enough & (pl.col("_pos") <= n_test + n_valid)).then(pl.lit("valid"))
             .otherwise(pl.lit("train")))
    return inter.with_columns(split.alias("split")).drop("_r", "_pos", "_n")


def opaque_ids(frame: pl.DataFrame, user: str, item: str, rng: np.random.Generator) -> pl.DataFrame:
    """`frame` with its `user` and `item` columns replaced by `user_id` = u<n> and `item_id` = i<n>, labels shuffled
    (users' permutation drawn from `rng` first, then items'), so no registered name or config matches."""
    users = frame[user].unique().sort().to_numpy()
    items = frame[item].unique().sort().to_numpy()
    user_label = dict(zip(users.tolist(), rng.permutation(len(users)).tolist()))
    item_label = dict(zip(items.tolist(), rng.permutation(len(items)).tolist()))
    return frame.with_columns(
        pl.format("u{}", pl.col(user).replace_strict(user_label, return_dtype=pl.Int64)).alias("user_id"),
        pl.format("i{}", pl.col(item).replace_strict(item_label, return_dtype=pl.Int64)).alias("item_id"),
    ).drop([c for c in (user, item) if c not in ("user_id", "item_id")])


def write_folder(inter: pl.DataFrame, out: Path) -> Path:
    """The generic folder dataset: `items.csv` (the item ids `inter` uses, sorted) and `interactions.csv` (`inter`)."""
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": inter["item_id"].unique().sort()}).write_csv(out / "items.csv")
    inter.write_csv(out / "interactions.csv")
    return out


def build(out: Path, seed: int = 0, user_fraction: float = 1.0, valid: float = 0.1, test: float = 0.1,
          keep_fraction: float = 1.0, next_item: bool = False, source: str = "ml-100k") -> Path:
    """Write the folder dataset to `out` (overwrites) and return it."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: one of {', '.join(SOURCES)}")
    if next_item and source != "ml-100k":
        raise ValueError("--next-item needs real timestamps: only the ml-100k source has them")
    ds = load_dataset(source)
    rng = np.random.default_rng(seed)
    inter = ds.interactions.select("user_index", "item_index", "timestamp")
    users = inter["user_index"].unique().to_numpy()
    keep = rng.permutation(users)[:max(1, int(round(user_fraction * len(users))))]
    inter = inter.filter(pl.col("user_index").is_in(keep.tolist()))
    if keep_fraction < 1.0:  # thin each user's events at random, keeping at least 5 (and all of a short history)
        inter = inter.with_columns(pl.Series("_k", rng.random(inter.height)))
        inter = inter.with_columns(pl.col("_k").rank("ordinal").over("user_index").alias("_kr"),
                                   pl.len().over("user_index").alias("_kn"))
        quota = pl.max_horizontal((pl.col("_kn") * keep_fraction).round(0), pl.lit(5))
        inter = inter.filter(pl.col("_kr") <= quota).drop("_k", "_kr", "_kn")
    user_label = rng.permutation(ds.n_users)
    item_label = rng.permutation(ds.n_items)
    inter = random_per_user_split(inter, rng, "user_index", valid, test)
    inter = inter.with_columns(
        pl.format("u{}", pl.col("user_index").map_elements(lambda u: int(user_label[u]), return_dtype=pl.Int64)).alias("user_id"),
        pl.format("i{}", pl.col("item_index").map_elements(lambda i: int(item_label[i]), return_dtype=pl.Int64)).alias("item_id"),
    ).sample(fraction=1.0, shuffle=True, seed=seed)
    # Synthetic timestamps (TikTok: file order) are not written: the derived data has no time at all.
    columns = ["user_id", "item_id"] + ([] if ds.timestamps_synthetic else ["timestamp"]) + ([] if next_item else ["split"])
    return write_folder(inter.select(columns), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", choices=SOURCES, default="ml-100k", help="dataset whose interactions are used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--user-fraction", type=float, default=1.0)
    parser.add_argument("--keep-fraction", type=float, default=1.0, help="share of each user's events kept (min 5)")
    parser.add_argument("--next-item", action="store_true", help="no split column: leave-last-out by time")
    args = parser.parse_args()
    path = build(args.out, args.seed, args.user_fraction, keep_fraction=args.keep_fraction, next_item=args.next_item,
                 source=args.source)
    frame = pl.read_csv(path / "interactions.csv")
    print(path, frame.height, "interactions", frame["user_id"].n_unique(), "users", frame["item_id"].n_unique(), "items",
          frame.group_by("split").len().sort("split").rows() if "split" in frame.columns else "leave-last-out")


if __name__ == "__main__":
    main()
