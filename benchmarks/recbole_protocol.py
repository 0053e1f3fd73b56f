"""A run's test figures under both masking rules: ours (train items) and RecBole's (train + valid items).

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/recbole_protocol.py --run runs/ml-100k [--baselines ...]

Why: RecBole, evaluating on the leave-one-out split, removes a user's train *and* valid items from
the ranking at test time; this project's harness (DiffMM's protocol) removes train items only, so
a valid item can take a top slot. Same split, same vectors, two masks: the difference is what
"comparable with RecBole" has to account for. Baselines given with `--baselines` are fitted on
train and scored the same two ways.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.artifact import load_run  # noqa: E402
from recsys.baselines import make_baseline  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import ScoreFn, evaluate_scores  # noqa: E402
from training.evaluation import run_tie_break  # noqa: E402
from training.evaluation_protocol import EvalSplit, prepare_split  # noqa: E402
from training.evaluation_runs import align_run, aligned_score_fn  # noqa: E402


def both_masks(score: ScoreFn, ev: EvalSplit) -> dict[str, float]:
    """NDCG@10 / Recall@10 / NDCG@20 on test with the train mask and with the train + valid mask."""
    train_valid = pl.concat([ev.train, ev.dataset.split("valid")])
    ours = evaluate_scores(score, ev.held_out, ev.train, ev.n_items)
    recbole = evaluate_scores(score, ev.held_out, train_valid, ev.n_items)
    return {**{f"{k} (train mask)": ours[k] for k in ("ndcg@10", "recall@10", "ndcg@20")},
            **{f"{k} (train+valid mask)": recbole[k] for k in ("ndcg@10", "recall@10", "ndcg@20")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", default=[])
    parser.add_argument("--baselines", default="")
    parser.add_argument("--dataset", default="ml-100k", help="for --baselines")
    args = parser.parse_args()
    rows = []
    for run_dir in args.run:
        run = load_run(run_dir)
        ds = load_dataset(run.dataset)
        ev = prepare_split(ds, "test", "leave-last-out", run_tie_break(run.config))  # type: ignore[arg-type]
        rows.append((str(run_dir), both_masks(aligned_score_fn(align_run(run, ev.dataset), ev.popularity), ev)))
    for name in filter(None, args.baselines.split(",")):
        ev = prepare_split(load_dataset(args.dataset), "test", "leave-last-out")
        model = make_baseline(name, dataset=args.dataset).fit(ev.dataset, ev.train)
        rows.append((name, both_masks(model.score, ev)))
    keys = list(rows[0][1]) if rows else []
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, figures in rows:
        print(f"| {name} | " + " | ".join(f"{figures[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
