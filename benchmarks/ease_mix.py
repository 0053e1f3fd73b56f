"""How much an EASE member would add to a trained run: per-user z-scored scores, mixed with weight alpha.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/ease_mix.py --run runs/gen-amazon-baby-recipe \\
        [--lam 100] [--alphas 0,0.25,0.5,0.75,1] [--rank 64 [--unit]]

Why: EASE (`recsys/baselines/ease.py`) ranks close to or above the two-tower on some data, and mixing kinds
of models is what our ensembles gain from. A per-user z-score mix is still a two-tower: subtracting a
per-user constant does not change one user's order, and dividing by the user's score spread is a scale on
that member's part of the user vector; EASE's weights factor into item and history tables at low rank.
So if the mix wins on valid, a closed-form member is worth building. This measures that, on the run's
exported vectors (`user_vectors.npy` . `item_vectors.npy`, the new-item prior left out), valid and test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recsys.artifact import RunArtifact, l2_normalise, load_run  # noqa: E402
from recsys.baselines.ease import EASE  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from training.evaluation_protocol import prepare_split  # noqa: E402
from training.evaluation_ranking import ranking_report  # noqa: E402


def run_vectors(run: RunArtifact, ds) -> tuple[np.ndarray, np.ndarray]:
    """The run's user and item vectors re-indexed to the dataset's indices (joined on ids)."""
    run_users = run.users.select("user_id", pl.col("user_index").alias("r"))
    run_items = run.items.select("item_id", pl.col("item_index").alias("r"))
    umap = ds.interactions.select("user_id", "user_index").unique().join(run_users, on="user_id")
    imap = ds.items.select("item_id", "item_index").join(run_items, on="item_id").sort("item_index")
    if imap.height != ds.n_items:
        raise SystemExit(f"{run.run_dir} has vectors for {imap.height} of the dataset's {ds.n_items} items")
    aligned = np.zeros((ds.n_users, run.user_vectors.shape[1]), np.float32)
    aligned[umap["user_index"].to_numpy()] = run.user_vectors[umap["r"].to_numpy()]
    return aligned, np.asarray(run.item_vectors)[imap["r"].to_numpy()]


def zscore(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--lam", type=float, default=None, help="EASE lambda (default: chosen on valid)")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--unit", action="store_true", help="with --rank: the member as the ensemble serves one: "
                        "EASE's history and item factors L2-normalised, score = run score + alpha x cosine (no z-score)")
    parser.add_argument("--rank", type=int, default=0, help="use EASE's weights truncated to this rank (SVD), as a "
                        "two-tower member would carry them (0: full)")
    args = parser.parse_args()
    run = load_run(args.run)
    ds = load_dataset(run.config["data"]["dataset"])
    splits = {s: prepare_split(ds, s) for s in ("valid", "test")}
    users, items = run_vectors(run, ds)
    ease = EASE(**({"lam": args.lam} if args.lam is not None else {})).fit(splits["test"].dataset, splits["test"].train)
    ease_scores = ease.score
    if args.rank:
        left, spread, right = np.linalg.svd(ease.weights.astype(np.float64), full_matrices=False)
        history = (left[:, :args.rank] * spread[:args.rank]).astype(np.float32)
        item_factors = right[:args.rank].T.astype(np.float32)
        if not args.unit:
            ease.weights = history @ item_factors.T
        else:
            unit_items = l2_normalise(item_factors)

            def ease_scores(u: np.ndarray) -> np.ndarray:
                return l2_normalise(np.asarray(ease.user_items[np.asarray(u, dtype=np.int64)] @ history)) @ unit_items.T
    elif args.unit:
        raise SystemExit("--unit needs --rank K")
    print(f"{args.run} + EASE (lambda {ease.lam:g}, rank {args.rank or 'full'}); alpha = EASE's weight; valid | test R@20 / N@20")
    for alpha in (float(a) for a in args.alphas.split(",")):
        def mixed(u: np.ndarray, alpha: float = alpha) -> np.ndarray:
            if args.unit:  # served form: [u_run | sqrt(alpha) u_ease] . [v_run | sqrt(alpha) v_ease]
                return (users[np.asarray(u)] @ items.T + alpha * ease_scores(u)).astype(np.float32)
            return ((1 - alpha) * zscore(users[np.asarray(u)] @ items.T) + alpha * zscore(ease_scores(u))).astype(np.float32)
        out = {s: ranking_report(mixed, ev) for s, ev in splits.items()}
        print(f"alpha {alpha:.2f}: " + " | ".join(f"{out[s]['recall@20']:.4f} / {out[s]['ndcg@20']:.4f}" for s in out))


if __name__ == "__main__":
    main()
