"""A run's test figures under both masking rules: ours (train items) and RecBole's (train + valid items).

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/recbole_protocol.py --run runs/ml-100k [--baselines ...]
        [--test-history train|train+valid|both] [--mix runs/a,runs/b,...]

`--mix` scores separately trained single-tower runs as one ensemble, exactly as `train.ensemble`
serves it (`benchmarks/member_mix.py`), under the same rules.

Why: RecBole, evaluating on the leave-one-out split, removes a user's train *and* valid items from
the ranking at test time; this project's harness (DiffMM's protocol) removes train items only, so
a valid item can take a top slot. Same split, same vectors, two masks: the difference is what
"comparable with RecBole" has to account for. Baselines given with `--baselines` are fitted on
train and scored the same two ways.

`--test-history train+valid` is RecBole's *input* rule as well: at test time a user is encoded
from their train and valid events (the run's served user encoder on that window, as the feed
would after the valid event arrives; SASRec and ItemKNN read those events). Since 2026-12-04 this
is what `recsys evaluate --split test` does on a leave-one-out split, with the train + valid mask
(`training.evaluation_protocol.EvalSplit.known`); `--test-history train` gives the earlier rule
(train events only), which every figure before that date used. Baselines with no history input
(BPR-MF, LightGCN, MostPopular) keep their train-fitted scores.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_store.store import run_window  # noqa: E402
from recsys.artifact import RunArtifact, load_run  # noqa: E402
from recsys.baselines import make_baseline  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import ScoreFn, evaluate_scores  # noqa: E402
from recsys.models.ensemble import concat_members, member_weights  # noqa: E402
from training.evaluation import run_tie_break  # noqa: E402
from training.evaluation_protocol import EvalSplit, prepare_split  # noqa: E402
from training.evaluation_runs import AlignedRun, align_run, aligned_score_fn, users_as_of  # noqa: E402


def both_masks(score: ScoreFn, ev: EvalSplit) -> dict[str, float]:
    """NDCG@10 / Recall@10 / NDCG@20 on test with the train mask and with the train + valid mask."""
    train_valid = pl.concat([ev.train, ev.dataset.split("valid")])
    ours = evaluate_scores(score, ev.held_out, ev.train, ev.n_items)
    recbole = evaluate_scores(score, ev.held_out, train_valid, ev.n_items)
    return {**{f"{k} (train mask)": ours[k] for k in ("ndcg@10", "recall@10", "ndcg@20")},
            **{f"{k} (train+valid mask)": recbole[k] for k in ("ndcg@10", "recall@10", "ndcg@20")}}


def run_users_from(run: RunArtifact, ev: EvalSplit, events: pl.DataFrame) -> "np.ndarray":
    """(n_users, d) the run's served user vectors of each dataset user's window over `events`."""
    return users_as_of(run.user_encoder, run_window(run.meta), events, ev.dataset.n_users, run.item_index_by_id)


def mixed_members(runs: list[RunArtifact], ev: EvalSplit, events: pl.DataFrame | None) -> AlignedRun:
    """Single-tower runs as the ensemble that serves them: [w_k u_k] . [w_k i_k], w_k = 1/sqrt(T_k).

    `events`: encode users from these events with each member's served encoder (None: the runs' own
    user vectors, i.e. train events)."""
    aligned = [align_run(run, ev.dataset) for run in runs]
    weights = member_weights([float(run.meta["temperature"]) for run in runs])
    users = [run_users_from(run, ev, events) if events is not None else a.user_vectors for run, a in zip(runs, aligned)]
    known = np.ones(ev.dataset.n_users, bool) if events is not None else aligned[0].user_known
    return replace(aligned[0], user_vectors=concat_members(users, weights), user_known=known,
                   item_vectors=concat_members([a.item_vectors for a in aligned], weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", default=[])
    parser.add_argument("--mix", action="append", default=[], help="comma-separated single-tower runs, scored as one ensemble")
    parser.add_argument("--baselines", default="")
    parser.add_argument("--dataset", default="ml-100k", help="for --baselines")
    parser.add_argument("--test-history", choices=("train", "train+valid", "both"), default="train",
                        help="events a user is encoded from at test time (RecBole: train+valid)")
    args = parser.parse_args()
    histories = ("train", "train+valid") if args.test_history == "both" else (args.test_history,)
    rows = []
    for run_dir in args.run:
        run = load_run(run_dir)
        ds = load_dataset(run.dataset)
        ev = prepare_split(ds, "test", "leave-last-out", run_tie_break(run.config))  # type: ignore[arg-type]
        aligned = align_run(run, ev.dataset)
        for history in histories:
            if history == "train+valid":
                events = pl.concat([ev.train, ev.dataset.split("valid")])
                aligned = replace(aligned, user_vectors=run_users_from(run, ev, events),
                                  user_known=np.ones(ev.dataset.n_users, bool))
            rows.append((f"{run_dir} ({history} input)",
                         both_masks(aligned_score_fn(aligned, ev.popularity, served_prior=True), ev)))
    for mix in args.mix:
        runs = [load_run(Path(p)) for p in mix.split(",")]
        ev = prepare_split(load_dataset(runs[0].dataset), "test", "leave-last-out", run_tie_break(runs[0].config))  # type: ignore[arg-type]
        for history in histories:
            events = pl.concat([ev.train, ev.dataset.split("valid")]) if history == "train+valid" else None
            aligned = mixed_members(runs, ev, events)
            rows.append((f"{mix} ({history} input)",
                         both_masks(aligned_score_fn(aligned, ev.popularity, served_prior=True), ev)))
    for name in filter(None, args.baselines.split(",")):
        ev = prepare_split(load_dataset(args.dataset), "test", "leave-last-out")
        model = make_baseline(name, dataset=args.dataset).fit(ev.dataset, ev.train)
        for history in histories:
            if history == "train+valid":
                if not hasattr(model, "read_histories"):
                    continue  # no history input (BPR-MF, LightGCN, MostPopular): the train-input row is its figure
                model.read_histories(pl.concat([ev.train, ev.dataset.split("valid")]))
            rows.append((f"{name} ({history} input)", both_masks(model.score, ev)))
    keys = list(rows[0][1]) if rows else []
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, figures in rows:
        print(f"| {name} | " + " | ".join(f"{figures[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
