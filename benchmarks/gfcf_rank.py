"""How much of GF-CF's exact filter a two-tower (low-rank) form keeps: valid or test Recall@20 / NDCG@20.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/gfcf_rank.py --dataset artifacts/unseen/gowalla \
        --svd-rank 1024 --spec 256:0.3:256:2 --spec 1024:0.3:256:1

Each `--spec r:alpha:k:p` scores r . (V_r S_r^p V_r^T + alpha D^-1/2 V_k V_k^T D^1/2): p = 2 is GF-CF's own linear
filter cut to rank r, p = 1 the flattened spectrum `recsys.baselines.gfcf.factored_filter` serves. The exact filter's
figure is the baseline's (`recsys evaluate --baseline gf-cf`). Why: the member must be a dot product of bounded
width, and this is what chose `ease.gfcf_rank` (BENCHMARKS.md, "GF-CF").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.baselines.base import interaction_matrix, n_users_of  # noqa: E402
from recsys.baselines.gfcf import inverse_root, propagation_matrix, right_singular  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import evaluate_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--svd-rank", type=int, default=1024)
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    parser.add_argument("--spec", action="append", required=True, help="r:alpha:k:p")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    train = ds.split("train")
    x = interaction_matrix(train, n_users_of(ds, train), ds.n_items).tocsr()
    normalised, item_degree = propagation_matrix(x)
    item_scale, item_up = inverse_root(item_degree), np.sqrt(item_degree)
    began = time.perf_counter()
    vectors, spread = right_singular(normalised, args.svd_rank, seed=0)
    print(f"svd rank {vectors.shape[1]}: {time.perf_counter() - began:.0f} s", flush=True)
    for spec in args.spec:
        r, alpha, k, power = spec.split(":")
        r, k, alpha, power = int(r), int(k), float(alpha), float(power)
        history_table = vectors[:, :r] * (spread[:r] ** power)[None, :]

        def score(batch: np.ndarray) -> np.ndarray:
            rows = x[batch]
            out = np.asarray(rows @ history_table, np.float32) @ vectors[:, :r].T
            if alpha:
                smooth = vectors[:, :k]
                out += alpha * (np.asarray(rows.multiply(item_scale[None, :]) @ smooth, np.float32)
                                @ (smooth.T * item_up[None, :]))
            return out

        m = evaluate_scores(score, ds.split(args.split), train, ds.n_items)  # a predefined split: train is masked
        print(f"{spec} {args.split}: R@20 {m['recall@20']:.4f} N@20 {m['ndcg@20']:.4f}", flush=True)


if __name__ == "__main__":
    main()
