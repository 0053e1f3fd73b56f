"""Ranking quality by how active a user was in train, and who consumed the held-out items of the most active users.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/user_activity.py --run runs/tiktok-def [--split test] [--heavy 50]

Why: the issue's TikTok segment table showed the users with 50+ train events at Recall@20 = 0. This prints, per
activity segment, the run's served Recall@20 / NDCG@20 (the harness's protocol), then for the users over `--heavy`
train events: their share of all train events, the train popularity of their held-out items, how many of those items'
train consumers are themselves heavy, and the best rank a simple collaborative model (MostPopular; item-item
cosine over all co-occurrences) gives those items: whether any method that learns from co-consumption could reach them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.artifact import load_run  # noqa: E402
from recsys.baselines import interaction_matrix, make_baseline  # noqa: E402
from recsys.data.splits import known_before  # noqa: E402
from recsys.metrics import per_user_ranking_metrics  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402
from training.export import served_scorer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--heavy", type=int, default=50, help="train events above which a user counts as heavy")
    args = parser.parse_args()
    run = load_run(args.run)
    data = build_training_data(load_config(args.run / "config.toml").data)
    held = data.valid if args.split == "valid" else data.test
    known = known_before(data.dataset, args.split, data.split_strategy)
    frame, _ = per_user_ranking_metrics(served_scorer(data, run.user_vectors, run.item_vectors), held, known,
                                        data.n_items, ks=(20,))
    activity = data.train.group_by("user_index").len().rename({"len": "n_train"})
    frame = frame.join(activity, on="user_index", how="left").with_columns(pl.col("n_train").fill_null(0))
    segments = frame.with_columns(pl.col("n_train").cut([1, 2, 4, 8, 16, 32, args.heavy]).alias("train events"))
    print(segments.group_by("train events").agg(pl.len().alias("users"), pl.col("recall@20").mean(),
                                                 pl.col("ndcg@20").mean()).sort("train events"))
    x = interaction_matrix(data.train, data.n_users, data.n_items)
    per_user = np.asarray(x.sum(1)).ravel()
    popularity = np.asarray(x.sum(0)).ravel()
    heavy = np.flatnonzero(per_user > args.heavy)
    rows = held.filter(pl.col("user_index").is_in(heavy.tolist()))
    print(f"{len(heavy)} users with over {args.heavy} train events hold {x[heavy].sum() / x.sum():.0%} of the train "
          f"events; {rows.height} of their {args.split} events")
    if not rows.height:
        return
    items = rows["item_index"].to_numpy()
    consumers = x.T.tocsr()
    heavy_share = [np.isin(consumers[i].indices, heavy).mean() if consumers[i].nnz else np.nan for i in items]
    print(f"their {args.split} items: train popularity mean {popularity[items].mean():.1f} (all {args.split} items "
          f"{popularity[held['item_index'].to_numpy()].mean():.1f}); share of those items' train consumers who are "
          f"heavy: {np.nanmean(heavy_share):.2f}")
    # ItemKNN with every neighbour and no shrinkage: the plain cosine over all co-occurrences, however rare
    baselines = {"MostPopular": make_baseline("most-popular"),
                 "item-item cosine": make_baseline("itemknn", k=data.n_items, shrink=0.0)}
    for name, model in baselines.items():
        model.fit(data.dataset, data.train)
        heavy_frame, _ = per_user_ranking_metrics(model.score, rows, known, data.n_items, ks=(20,))
        report(name, heavy_frame, data.n_items)
    report("this run", frame.filter(pl.col("user_index").is_in(heavy.tolist())), data.n_items)


def report(name: str, per_user: pl.DataFrame, n_items: int) -> None:
    """Recall@20 and the median rank of the held-out item (1 / MRR: one held-out item per user here)."""
    ranks = 1.0 / per_user["mrr"].to_numpy()
    print(f"  {name:<17} Recall@20 {per_user['recall@20'].mean():.3f}, median rank {np.median(ranks):.0f} of {n_items}")


if __name__ == "__main__":
    main()
