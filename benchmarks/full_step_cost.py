"""CPU seconds of one full training step (forward + backward) at several batch / softmax-group settings.

    .venv/bin/python benchmarks/full_step_cost.py --dataset artifacts/unseen/gowalla --setting 2048:0 --setting 8192:0 --setting 8192:2048

Why: the full step propagates the whole graph once per batch, so on a large graph an epoch costs its number of
steps times the graph, and a larger batch would cut it, were it not for the in-batch softmax, whose logits grow
with the square of the batch. `loss.softmax_group` keeps one propagation per batch and the logits of one group.
This prints, per BATCH:GROUP setting (0 = one softmax), the CPU seconds of a few steps of the dataset's default
tower on one torch thread, and the CPU an epoch of such steps would take. CPU time, not wall time: the figure
holds on a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402
from training.run import build_task  # noqa: E402


def step_seconds(task, data, batch: int, steps: int) -> list[float]:
    """CPU seconds of `steps` consecutive steps over one seeded permutation of the train pairs."""
    perm = torch.randperm(len(data.train_users), generator=torch.Generator().manual_seed(0))
    seconds = []
    for step in range(steps):
        rows = perm[step * batch:(step + 1) * batch]
        task.zero_grad(set_to_none=True)
        began = time.process_time()
        loss, _ = task(data.train_users[rows], data.train_items[rows], torch.Generator().manual_seed(step))
        loss.backward()
        seconds.append(time.process_time() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--setting", action="append", required=True, metavar="BATCH:GROUP")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = None
    rows = []
    for setting in args.setting:
        batch, group = (int(part) for part in setting.split(":"))
        config = load_config(None, args.dataset, [f"train.batch_size={batch}", f"loss.softmax_group={group}"])
        data = data or build_training_data(config.data)
        seconds = step_seconds(build_task(config, data), data, batch, args.steps)
        epoch = len(data.train_users) / batch * min(seconds)
        rows.append({"batch": batch, "group": group, "step_cpu_s": [round(s, 2) for s in seconds],
                     "epoch_cpu_s": round(epoch)})
        print(f"batch {batch:6d} group {group:5d}: CPU s a step {', '.join(f'{s:.2f}' for s in seconds)}; "
              f"an epoch ~{epoch:.0f} s", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
