"""Does a predefined split hold out a later period? Where each split's events fall along the source's item ids.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/split_drift.py --dataset tiktok [--bins 10]

Why: on TikTok (DiffMM's split, no timestamps) MostPopular counted on valid scores far above MostPopular counted on
train when both rank test ("The refit" in BENCHMARKS.md): the held-out events are popular in another way. Source
datasets usually number items in order of first appearance; if valid and test lean to the highest ids, they come
from a later period than most of train, and a model that learns from train alone ranks yesterday's items. This
prints each split's share of events per item-id bin, then MostPopular's test Recall@20 / NDCG@20 counted four
ways: on train (the baseline), on the light users' train events (the heavy few are the oldest users), on train
events of the newest-numbered items only, and on valid (what the refit sees). Only a diagnosis: the item id is
not a feature the project uses, nor the peers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.baselines import make_baseline  # noqa: E402
from recsys.data.splits import known_before  # noqa: E402
from recsys.metrics import per_user_ranking_metrics  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402


def id_order(items: pl.DataFrame) -> np.ndarray:
    """Each item index's position (0..1) in the source's own item-id order (numeric ids compared as numbers)."""
    ids = items.sort("item_index")["item_id"].cast(pl.String)
    numeric = ids.str.contains(r"^\d+$").all()
    keys = ids.cast(pl.Int64) if numeric else ids
    order = np.empty(len(ids))
    order[np.argsort(keys.to_numpy(), kind="stable")] = np.arange(len(ids)) / max(len(ids) - 1, 1)
    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--newest", type=float, default=0.3, help="share of the item-id order counted as newest")
    args = parser.parse_args()
    data = build_training_data(load_config(None, args.dataset).data)
    order = id_order(data.dataset.items)
    splits = {"train": data.train, "valid": data.valid, "test": data.test}
    edges = np.linspace(0, 1, args.bins + 1)
    print(f"{args.dataset}: share of each split's events per item-id bin (oldest-numbered first)")
    for name, frame in splits.items():
        shares = np.histogram(order[frame["item_index"].to_numpy()], bins=edges)[0] / max(frame.height, 1)
        print(f"  {name:<5} " + " ".join(f"{s:5.1%}" for s in shares))
    known = known_before(data.dataset, "test", data.split_strategy)
    newest = data.train.filter(pl.col("item_index").is_in(np.flatnonzero(order >= 1 - args.newest).tolist()))
    light = data.train.filter(pl.len().over("user_index") <= 50)
    counted_on = {"train": data.train, "train, users with <= 50 events": light,
                  f"train, newest {args.newest:.0%} of ids": newest, "valid": data.valid}
    print("MostPopular ranking test, counted on:")
    for label, frame in counted_on.items():
        model = make_baseline("most-popular")
        model.fit(data.dataset, frame)
        scored, _ = per_user_ranking_metrics(model.score, data.test, known, data.n_items, ks=(20,))
        print(f"  {label:<31} Recall@20 {scored['recall@20'].mean():.4f}  NDCG@20 {scored['ndcg@20'].mean():.4f}"
              f"  ({frame.height:,} events)")


if __name__ == "__main__":
    main()
