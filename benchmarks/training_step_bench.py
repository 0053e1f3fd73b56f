"""Time of one training step (forward + backward + optimiser) as the catalogue grows, batch fixed:
the full-catalogue step and the sampled step (issue 14) side by side.

Why: the full step (`LossConfig.step = "full"`) runs the item tower, the content kNN smoothing and
the graph propagation over the *whole* catalogue every step, so its cost grows with the number of
items; the sampled step encodes only the items the batch needs (positives, negatives, the users'
history windows, a fan-out of graph neighbours), so its cost should stay flat. This script measures
both at 10k, 100k and 1M items (the full step at sizes up to `--full-max`, where it is affordable),
plus the per-epoch layer-cache refresh the sampled step amortises over an epoch. Each step is
reported in wall seconds and in CPU seconds of this process (`time.process_time`, all its threads):
on a machine shared with other jobs the CPU seconds are the steadier figure.

Synthetic, controlled data (the real datasets have 1.7k and 6.7k items): N items with a 64-d image
feature, 20k users with 5-50 interactions each drawn from a Zipf-like popularity, one tower at dim
64 with 2 propagation layers (the TikTok default's model settings).

Usage:
    .venv/bin/python benchmarks/training_step_bench.py --items 10000 100000 1000000 --steps 5
    .venv/bin/python benchmarks/training_step_bench.py --items 10000 100000 1000000 --plot benchmarks/out/step.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.models import GraphContext, TaskInputs, TwoTowerTrainTask, build_model  # noqa: E402
from recsys.models.config import LossConfig, ModelConfig  # noqa: E402
from recsys.models.graph import FrozenSparse, InteractionGraph, item_knn_graph  # noqa: E402
from recsys.models.item_tower import ItemCatalog  # noqa: E402
from recsys.models.user_tower import UserHistories  # noqa: E402
from training.trainer import build_optimizer  # noqa: E402


def synthetic_task(n_items: int, n_users: int, config: ModelConfig, loss: LossConfig, seed: int = 0,
                   max_history: int = 50) -> tuple[TwoTowerTrainTask, torch.Tensor, torch.Tensor]:
    """A task over N synthetic items (Zipf-like popularity, one 64-d image medium) and its train pairs.

    Histories are each user's last `max_history` events (the feature window); the graph has all of them.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 51, size=n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=int(lengths.sum()), p=popularity / popularity.sum())
    users = np.repeat(np.arange(n_users), lengths)
    features = {"image": rng.standard_normal((n_items, 64)).astype(np.float32)}
    masks = {"image": np.ones(n_items, bool)}
    counts = np.bincount(items, minlength=n_items)
    catalog = ItemCatalog.from_arrays(features, masks, counts)
    torch.manual_seed(seed)
    model = build_model("two_tower", config, n_items, n_users, {"image": 64})
    model.item_tower.fit_statistics(catalog)
    knn_graph = FrozenSparse(item_knn_graph(features, masks, config.item_knn)) if config.item_knn else None
    layers = config.propagation_layers
    graph = InteractionGraph.from_pairs(users, items, n_users, n_items, config.graph_self_exponent,
                                        config.graph_neighbour_exponent) if layers else None
    graphs = GraphContext(graph, knn_graph)
    ends = np.cumsum(lengths)
    window = [items[max(e - n, e - max_history):e] for e, n in zip(ends, lengths)]
    histories = UserHistories.from_lists(window)
    task = TwoTowerTrainTask(model, loss, TaskInputs(catalog, histories, graphs, torch.as_tensor(counts)))
    return task, torch.as_tensor(users), torch.as_tensor(items)


def time_steps(n_items: int, step: str, args: argparse.Namespace) -> dict:
    built = time.perf_counter()
    config = ModelConfig(dim=args.dim, propagation_layers=args.layers, item_knn=args.knn, history_embedding=False,
                         user_pooling="mean", popularity_prior=True)
    task, users, items = synthetic_task(n_items, args.users, config,
                                        LossConfig(step=step, fanout=args.fanout, item_fanout=args.item_fanout))
    build_s = time.perf_counter() - built
    optimizer = build_optimizer(task, lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    refreshed = time.perf_counter()
    task.begin_epoch()  # the sampled step's per-epoch layer cache (a no-op for the full step)
    refresh_s = time.perf_counter() - refreshed
    times, cpu = [], []
    for step_no in range(args.steps + 1):
        rows = torch.randint(0, len(users), (args.batch,), generator=generator)
        started, cpu_started = time.perf_counter(), time.process_time()
        loss, _ = task(users[rows], items[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step_no:  # the first step pays one-off allocations
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
    steps_per_epoch = int(np.ceil(len(users) / args.batch))
    return {"items": n_items, "step": task.step_kind, "users": args.users, "batch": args.batch, "dim": args.dim,
            "knn": args.knn, "layers": args.layers, "fanout": args.fanout, "item_fanout": args.item_fanout, "build_s": round(build_s, 1),
            "step_s_median": round(float(np.median(times)), 3), "step_s_min": round(float(np.min(times)), 3),
            "step_cpu_s_median": round(float(np.median(cpu)), 3),
            "cache_refresh_s": round(refresh_s, 2), "steps_per_epoch": steps_per_epoch, "steps": args.steps}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for step, marker in (("full", "o"), ("sampled", "s")):
        rows = sorted((r for r in results if r["step"] == step), key=lambda r: r["items"])
        if rows:
            line, = ax.plot([r["items"] for r in rows], [r["step_s_median"] for r in rows], marker=marker,
                            label=f"{step} step, wall s")
            if all("step_cpu_s_median" in r for r in rows):
                ax.plot([r["items"] for r in rows], [r["step_cpu_s_median"] for r in rows], marker=marker,
                        linestyle="--", color=line.get_color(), label=f"{step} step, CPU s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue size (items)")
    ax.set_ylabel("seconds per step (median)")
    ax.set_title("Training step vs catalogue size (batch 2,048, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--knn", type=int, default=0, help="content kNN neighbours (0: off; the kNN build is O(N^2))")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--fanout", type=int, default=16)
    parser.add_argument("--item-fanout", type=int, default=0, help="sampled step: loss.item_fanout")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "sampled"], choices=["full", "sampled"])
    parser.add_argument("--full-max", type=int, default=1_000_000, help="largest catalogue the full step is timed at")
    parser.add_argument("--out", type=Path, help="append the JSON lines here too")
    parser.add_argument("--plot", type=Path, help="save the step-time curve (PNG) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for n in args.items:
        for mode in args.modes:
            if mode == "full" and n > args.full_max:
                continue
            result = time_steps(n, mode, args)
            result.update(cpus=os.cpu_count(), threads=args.threads, load_avg_1m=round(os.getloadavg()[0], 1))
            results.append(result)
            line = json.dumps(result)
            print(line, flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.write(line + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
