"""The gap between a trained run and a baseline on the same users, with its paired standard error.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/paired_gap.py --run runs/gen-amazon-baby-recipe \\
        --baseline lightgcn [--baseline itemknn ...] [--split test]

Why: two aggregate figures each carry a standard error, but the question "is the run ahead of the
baseline?" is about the per-user differences: the same users are ranked by both, so their
difference's standard error (sd of the per-user differences / sqrt(users)) is the one to quote.
The baseline is fitted on train and picks its epoch on valid, and ranks from the events the run ranks from,
exactly as `recsys evaluate --baseline` does (`training.evaluation.fit_baseline`).

A peer run outside the project can be paired too, from its per-user Recall@20 (`--peer-hits`, as
`benchmarks/diffmm_peer.py` writes them for every epoch; `--peer-epoch` picks one):

    .venv/bin/python benchmarks/paired_gap.py --run runs/tiktok-default --peer-hits artifacts/diffmm-tiktok-paired.per_user.npz --peer-epoch 29
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recsys.artifact import load_run  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from training.evaluation import fit_baseline, per_user_metrics, run_refit  # noqa: E402
from training.evaluation_protocol import prepare_split  # noqa: E402
from training.evaluation_ranking import per_user_frame  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "ndcg@10")


def paired(run_users: pl.DataFrame, base_users: pl.DataFrame,
           metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, float]]:
    """Mean per-user difference run - baseline, its standard error and the relative gap, per metric."""
    joined = run_users.join(base_users, on="user_id", suffix="_base")
    if joined.height != run_users.height or joined.height != base_users.height:
        raise SystemExit(f"the run and the baseline rank different users ({run_users.height} vs {base_users.height})")
    out = {}
    for m in metrics:
        diff = joined[m] - joined[f"{m}_base"]
        base = float(joined[f"{m}_base"].mean())
        out[m] = {"run": float(joined[m].mean()), "baseline": base, "diff": float(diff.mean()),
                  "se": float(diff.std()) / math.sqrt(joined.height), "relative": float(diff.mean()) / base if base else 0.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--baseline", action="append", default=[])
    parser.add_argument("--split", default="test")
    parser.add_argument("--peer-hits", type=Path, help="a peer's per-user Recall@20 per epoch (npz: SPLIT_EPOCH_users / _hits)")
    parser.add_argument("--peer-epoch", type=int, default=0)
    args = parser.parse_args()
    if not args.baseline and args.peer_hits is None:
        parser.error("give --baseline NAME (repeatable) and/or --peer-hits FILE")
    run = load_run(args.run)
    run_users = per_user_metrics(args.run, args.split)
    results = {}
    if args.peer_hits is not None:
        hits = np.load(args.peer_hits)
        key = f"{args.split}_{args.peer_epoch}"
        if f"{key}_users" not in hits:
            raise SystemExit(f"{args.peer_hits} has no {args.split} figures for epoch {args.peer_epoch}")
        peer = pl.DataFrame({"user_id": [str(int(u)) for u in hits[f"{key}_users"]],
                             "recall@20": hits[f"{key}_hits"].astype(float)})
        results["peer"] = paired(run_users.select("user_id", "recall@20"), peer, ("recall@20",))
        report(f"{args.run} vs {args.peer_hits.name} epoch {args.peer_epoch}, {args.split}, {peer.height} users",
               results["peer"])
    if args.baseline:
        ds = load_dataset(run.config["data"]["dataset"])
        # the run's split, and the harness's rule for what test is ranked from (history baselines read train + valid);
        # a refit run's baselines learn from train + valid too (the same data as the run)
        ev = prepare_split(ds, args.split, run.meta.get("split_strategy"),
                           run.config["data"].get("tie_break", "file-order"), refit=run_refit(run.config))
        for name in args.baseline:
            results[name] = paired(run_users, per_user_frame(fit_baseline(name, ev).score, ev))
            report(f"{args.run} vs {name}, {args.split}, {run_users.height} users", results[name])
    print(json.dumps(results))


def report(title: str, gaps: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    for m, r in gaps.items():
        print(f"  {m}: {r['run']:.4f} vs {r['baseline']:.4f}  diff {r['diff']:+.4f} "
              f"(SE {r['se']:.4f}, {r['diff'] / r['se']:+.1f} SE; {100 * r['relative']:+.1f} %)")


if __name__ == "__main__":
    main()
