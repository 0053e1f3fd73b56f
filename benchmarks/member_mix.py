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

import numpy as np

from recsys.artifact import load_run
from recsys.data.splits import known_before
from recsys.metrics import dot_product_scorer, evaluate_scores
from recsys.models.ensemble import concat_members, member_weights
from training.config import load_config
from training.data import build_training_data
from training.evaluation_runs import users_as_of
from training.run import served_item_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", action="append", choices=["valid", "test"])
    args = parser.parse_args()
    splits = args.split or ["valid"]
    config = load_config(args.runs[0] / "config.toml")
    data = build_training_data(config.data)
    temps = [json.loads((r / "run.json").read_text())["temperature"] for r in args.runs]
    w = member_weights(temps)
    items = concat_members([np.load(r / "item_vectors.npy") for r in args.runs], w)
    out = {"runs": [str(r) for r in args.runs]}
    for split in splits:
        held_out = data.valid if split == "valid" else data.test
        known = known_before(data.dataset, split, data.split_strategy)
        if known.height == data.train.height:
            members = [np.load(r / "user_vectors.npy") for r in args.runs]
        else:
            members = [users_as_of(load_run(r).user_encoder, data.window.size, known, data.n_users)
                       for r in args.runs]
        users = concat_members(members, w)
        m = evaluate_scores(dot_product_scorer(users, items, served_item_prior(data)), held_out, known, data.n_items)
        out[split] = {k: round(float(m[k]), 4) for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
