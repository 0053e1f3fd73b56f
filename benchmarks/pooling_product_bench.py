"""One full training step of a dataset's default tower, its user pooling as a gather-and-sum vs a sparse product.

    .venv/bin/python benchmarks/pooling_product_bench.py --dataset artifacts/unseen/gowalla --steps 4

Why: the full step pools every user's history window each step (`UserTower.forward`). As a gather of each
entry's item vector, a weighting and a scatter-sum it materialises an (entries x dim) tensor several times a
step (forward and backward); on Gowalla (29,858 users, 50-event windows, dim 256) that was two thirds of the
step. `recsys.models.user_tower.pooling_matrix` computes the same sums as one sparse product. This script runs
the same steps both ways in one process (alternating, one torch thread, the same batches), checks the losses and
gradients agree bit for bit, and prints the seconds per step (wall and CPU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.models import user_tower  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402
from training.run import build_task  # noqa: E402

NEVER = 1 << 62


def timed_step(task, users, items, seed: int) -> tuple[float, float, float, torch.Tensor]:
    """(wall s, CPU s, loss, gradient of the first parameter with one) of one forward + backward."""
    task.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    loss, _ = task(users, items, torch.Generator().manual_seed(seed))
    loss.backward()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    grad = next(p.grad.detach().clone() for p in task.parameters() if p.grad is not None)
    return wall, cpu, loss.item(), grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=0, help="0: the config's batch size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(None, args.dataset)
    data = build_training_data(config.data)
    task = build_task(config.member(0), data)
    batch = args.batch or config.train.batch_size
    perm = torch.randperm(len(data.train_users), generator=torch.Generator().manual_seed(0))
    rows = {"gather": [], "product": []}
    for step in range(args.steps + 1):  # step 0 warms both paths up and is not counted
        sample = perm[step * batch:(step + 1) * batch]
        users, items = data.train_users[sample], data.train_items[sample]
        results = {}
        for name, threshold in (("gather", NEVER), ("product", user_tower.PRODUCT_MIN_VALUES)):
            saved, user_tower.PRODUCT_MIN_VALUES = user_tower.PRODUCT_MIN_VALUES, threshold
            try:
                results[name] = timed_step(task, users, items, step)
            finally:
                user_tower.PRODUCT_MIN_VALUES = saved
        if results["gather"][2] != results["product"][2] or not torch.equal(results["gather"][3], results["product"][3]):
            raise SystemExit(f"step {step}: the two poolings disagree (loss {results['gather'][2]} vs {results['product'][2]})")
        if step:
            for name, (wall, cpu, _, _) in results.items():
                rows[name].append((wall, cpu))
    report = {"dataset": args.dataset, "batch": batch, "dim": config.model.dim, "steps": args.steps,
              "users": data.n_users, "items": data.n_items, "train_pairs": len(data.train_users),
              "identical_loss_and_gradient": True,
              **{name: {"wall_s": sum(w for w, _ in r) / len(r), "cpu_s": sum(c for _, c in r) / len(r)}
                 for name, r in rows.items()}}
    report["speedup_wall"] = report["gather"]["wall_s"] / report["product"]["wall_s"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
