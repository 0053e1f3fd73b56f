"""Time of one training step (forward + backward + Adam) as the catalogue grows, batch fixed.

Why: `TwoTowerTrainTask.forward` runs the item tower, the content kNN smoothing and the graph
propagation over the *whole* catalogue every step, so the step cost grows with the number of
items, not with the batch; this script measures that growth (issue 14 asks for 10k, 100k, 1M).

Synthetic, controlled data (the real datasets have 1.7k and 6.7k items): N items with a 64-d image
feature, 20k users with 5-50 interactions each drawn from a Zipf-like popularity, the TikTok
default's model settings (one tower) at dim 64.

Usage:
    .venv/bin/python benchmarks/training_step_bench.py --items 10000 100000 1000000 --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from recsys.models import GraphContext, TaskInputs, TwoTowerTrainTask, build_model
from recsys.models.config import LossConfig, ModelConfig
from recsys.models.graph import FrozenSparse, InteractionGraph, item_knn_graph
from recsys.models.item_tower import ItemCatalog
from recsys.models.user_tower import UserHistories


def synthetic_task(n_items: int, n_users: int, dim: int, knn: int, layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 51, size=n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(lengths.sum()), p=popularity / popularity.sum())
    users = np.repeat(np.arange(n_users), lengths)
    features = {"image": rng.standard_normal((n_items, 64)).astype(np.float32)}
    masks = {"image": np.ones(n_items, bool)}
    counts = np.bincount(items, minlength=n_items)
    catalog = ItemCatalog.from_arrays(features, masks, counts)
    config = ModelConfig(dim=dim, propagation_layers=layers, item_knn=knn, history_embedding=False,
                         user_pooling="mean", popularity_prior=True)
    model = build_model("two_tower", config, n_items, n_users, {"image": 64})
    model.item_tower.fit_statistics(catalog)
    knn_graph = FrozenSparse(item_knn_graph(features, masks, knn)) if knn else None
    graphs = GraphContext(InteractionGraph.from_pairs(users, items, n_users, n_items) if layers else None, knn_graph)
    histories = UserHistories.from_flat(items, lengths)
    task = TwoTowerTrainTask(model, LossConfig(), TaskInputs(catalog, histories, graphs, torch.as_tensor(counts)))
    return task, torch.as_tensor(users), torch.as_tensor(items)


def time_steps(n_items: int, args: argparse.Namespace) -> dict:
    built = time.perf_counter()
    task, users, items = synthetic_task(n_items, args.users, args.dim, args.knn, args.layers)
    build_s = time.perf_counter() - built
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(args.steps + 1):
        rows = torch.randint(0, len(users), (args.batch,), generator=generator)
        started = time.perf_counter()
        loss, _ = task(users[rows], items[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:  # the first step pays one-off allocations
            times.append(time.perf_counter() - started)
    return {"items": n_items, "users": args.users, "batch": args.batch, "dim": args.dim, "knn": args.knn,
            "layers": args.layers, "build_s": round(build_s, 1), "step_s_median": round(float(np.median(times)), 3),
            "step_s_min": round(float(np.min(times)), 3), "steps": args.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--knn", type=int, default=0, help="content kNN neighbours (0: off; the kNN build is O(N^2))")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.items:
        result = time_steps(n, args)
        result.update(cpus=os.cpu_count(), threads=args.threads, load_avg_1m=round(os.getloadavg()[0], 1))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
