"""Score an ensemble of already-trained single-tower runs without training it again.

A `train.ensemble = K` run serves the members' concatenation [u_k/√T_k] · [i_k/√T_k] (see
`recsys.models.ensemble`); this recombines the stored vectors of separate single-tower runs the
same way and evaluates them with the run's protocol (full ranking, train items masked, the served
new-item prior; ranking test after valid on a time-ordered split reads train + valid: each member's
user vectors are re-encoded from those rows by its served encoder, `known_before`), so a mix of
members trained with different settings can be judged on `valid` before any config asks for it.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/member_mix.py runs/a runs/b runs/c [--split valid]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from feature_store.store import run_window
from recsys.artifact import load_run
from recsys.data.splits import known_before
from recsys.metrics import evaluate_scores
from recsys.models.ensemble import concat_members, member_weights
from training.config import load_config
from training.data import build_training_data
from training.evaluation_runs import users_as_of
from training.export import served_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", action="append", choices=["valid", "test"])
    args = parser.parse_args()
    splits = args.split or ["valid"]
    config = load_config(args.runs[0] / "config.toml")
    data = build_training_data(config.data)
    runs = [load_run(r) for r in args.runs]
    w = member_weights([float(run.meta["temperature"]) for run in runs])
    items = concat_members([run.item_vectors for run in runs], w)
    out = {"runs": [str(r) for r in args.runs]}
    for split in splits:
        held_out = data.valid if split == "valid" else data.test
        known = known_before(data.dataset, split, data.split_strategy)
        if known.height == data.train.height:
            members = [run.user_vectors for run in runs]
        else:  # each member's own served encoder over its own window, as the harness encodes a run
            members = [users_as_of(run.user_encoder, run_window(run.meta), known, data.n_users, run.item_index_by_id)
                       for run in runs]
        users = concat_members(members, w)
        m = evaluate_scores(served_scorer(data, users, items), held_out, known, data.n_items)
        out[split] = {k: round(float(m[k]), 4) for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
