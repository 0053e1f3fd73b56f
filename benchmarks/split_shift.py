"""How far a split's held-out events lie from its train events: popularity counted on each part, ranked on test.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/split_shift.py --dataset tiktok [--model itemknn ...] [--json OUT]

Why: on TikTok (DiffMM's split) a model refit on train + valid (`train.refit`) gained far more on test than
~5 % more events should give. If valid and test are drawn like train, an item's popularity among the valid
events predicts test no better than its popularity among the (20x more) train events; if they come from
another period or population, valid's popularity is the better predictor, and only a model that learns from
valid can see it. Each row is MostPopular with its counts from one part, ranked under the harness's test
protocol (`prepare_split`: the users' known events masked), so the figures sit beside the run's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import evaluate_scores, per_user_ranking_metrics  # noqa: E402
from training.evaluation import fit_baseline  # noqa: E402
from training.evaluation_protocol import prepare_split  # noqa: E402

TOP = 100  # the head whose overlap between parts is reported


def counts(frame: pl.DataFrame, n_items: int) -> np.ndarray:
    return np.bincount(frame["item_index"].to_numpy(), minlength=n_items).astype(np.float64)


def popularity_scorer(item_counts: np.ndarray):
    """Every user gets the same scores: the counts (ties broken by item index, as the harness's top-k does)."""
    row = item_counts.astype(np.float32)

    def score(batch: np.ndarray) -> np.ndarray:
        return np.broadcast_to(row, (len(batch), len(row)))

    return score


def paired_recall(model_name: str, dataset, k: int = 20) -> dict[str, float]:
    """One baseline fitted on train, its Recall@k per user on valid and on test (train masked on both), paired
    over the users with both parts: mean of each, mean difference valid - test and its standard error."""
    ev_valid, ev_test = prepare_split(dataset, "valid"), prepare_split(dataset, "test")
    model = fit_baseline(model_name, ev_test)
    frames = []
    for name, ev in (("valid", ev_valid), ("test", ev_test)):
        frame, _ = per_user_ranking_metrics(model.score, ev.held_out, ev.known, ev.dataset.n_items, ks=(k,))
        frames.append(frame.select("user_index", pl.col(f"recall@{k}").alias(name)))
    joined = frames[0].join(frames[1], on="user_index")
    if joined.height < 2:  # valid and test rank other users (TikTok's split): nothing to pair
        return {"model": model_name, "users": joined.height, "skipped": "valid and test share fewer than 2 users"}
    diff = (joined["valid"] - joined["test"]).to_numpy()
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"model": model_name, "users": joined.height, f"valid_recall@{k}": round(float(joined["valid"].mean()), 4),
            f"test_recall@{k}": round(float(joined["test"].mean()), 4), "difference": round(float(diff.mean()), 4),
            "se": round(se, 4), "z": round(float(diff.mean()) / se, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--model", action="append", default=[],
                        help="a baseline whose per-user Recall@20 on valid and test is paired (repeatable)")
    args = parser.parse_args()
    ev = prepare_split(load_dataset(args.dataset), "test")
    ds, n = ev.dataset, ev.dataset.n_items
    parts = {"train": ds.split("train"), "valid": ds.split("valid"), "test": ds.split("test")}
    by_part = {name: counts(frame, n) for name, frame in parts.items()}
    sources = {"train": by_part["train"], "valid": by_part["valid"], "train+valid": by_part["train"] + by_part["valid"]}
    rows = {}
    for name, item_counts in sources.items():
        metrics = evaluate_scores(popularity_scorer(item_counts), ev.held_out, ev.known, n)
        rows[name] = {k: round(float(metrics[k]), 4) for k in ("recall@20", "ndcg@20")}
    heads = {name: set(np.argsort(-c, kind="stable")[:TOP].tolist()) for name, c in by_part.items()}
    test_items = parts["test"]["item_index"].to_numpy()
    report = {
        "dataset": ds.name, "split": ev.strategy, "events": {k: v.height for k, v in parts.items()},
        "users": {k: v["user_index"].n_unique() for k, v in parts.items()},
        "users_in_valid_and_test": int(len(set(parts["valid"]["user_index"]) & set(parts["test"]["user_index"]))),
        "most_popular_on_test_counted_on": rows,
        f"top{TOP}_overlap": {"train-valid": len(heads["train"] & heads["valid"]),
                              "train-test": len(heads["train"] & heads["test"]),
                              "valid-test": len(heads["valid"] & heads["test"])},
        f"test_events_on_top{TOP}_of": {name: round(float(np.isin(test_items, list(heads[name])).mean()), 4)
                                        for name in ("train", "valid")},
        "test_events_on_items_without_train_events": int((by_part["train"][test_items] == 0).sum()),
        "of_which_items_in_valid": int(((by_part["train"][test_items] == 0) & (by_part["valid"][test_items] > 0)).sum()),
    }
    if args.model:
        report["recall_valid_vs_test"] = [paired_recall(name, ev.dataset) for name in args.model]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
