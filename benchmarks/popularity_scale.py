"""Is a run's learned popularity prior at the valid optimum? Sharpen or flatten it after training and re-rank.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/popularity_scale.py --run runs/tiktok-def --alpha 0.5 1 1.5

Why: TikTok's held-out events lean to newer items than train's (`benchmarks/split_drift.py`), so the prior learned
from train popularity could be too strong for the later period, and valid (drawn from that period) could pick a
weaker one. Every member's item rows carry the prior as their last coordinate s = tanh(a·z + b)
(`recsys.models.popularity_prior`); this replaces it with tanh(α · atanh(s)) (slope and offset scaled together),
rescales the rest of the row to keep its length, and evaluates the served ranking on valid and test. Users are
unchanged. α = 1 reproduces the run's own figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.artifact import load_run  # noqa: E402
from recsys.data.splits import known_before  # noqa: E402
from recsys.metrics import evaluate_scores  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402
from training.export import served_scorer  # noqa: E402


def rescaled_prior(items: np.ndarray, member_width: int, alpha: float) -> np.ndarray:
    """`items` with each member block's prior coordinate s replaced by tanh(alpha · atanh(s)), row lengths kept."""
    out = np.asarray(items, np.float64).copy()
    for start in range(0, out.shape[1], member_width):
        block = out[:, start:start + member_width]
        length = np.linalg.norm(block, axis=1, keepdims=True)
        length[length == 0] = 1.0
        s = np.clip(block[:, -1:] / length, -1 + 1e-6, 1 - 1e-6)
        new = np.tanh(alpha * np.arctanh(s))
        block[:, :-1] *= np.sqrt(1 - new ** 2) / np.sqrt(1 - s ** 2)
        block[:, -1:] = new * length
    return out.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    args = parser.parse_args()
    config = load_config(args.run / "config.toml")
    if not config.model.popularity_prior:
        sys.exit(f"{args.run}: model.popularity_prior is off: no prior coordinate to rescale")
    run = load_run(args.run)
    data = build_training_data(config.data)
    width = config.model.dim + 1
    if run.item_vectors.shape[1] % width:
        sys.exit(f"{args.run}: item vectors of width {run.item_vectors.shape[1]} are not members of width {width} "
                 "(a closed-form member has another width): rescale tower-only runs")
    for alpha in args.alpha:
        items = rescaled_prior(run.item_vectors, width, alpha)
        row: dict = {"alpha": alpha}
        for split, held in (("valid", data.valid), ("test", data.test)):
            known = known_before(data.dataset, split, data.split_strategy)
            m = evaluate_scores(served_scorer(data, run.user_vectors, items), held, known, data.n_items)
            row[split] = {"recall@20": round(float(m["recall@20"]), 4), "ndcg@20": round(float(m["ndcg@20"]), 4)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
