"""Cost of a request-sized user-tower encode, per runtime, as the feed's miss path runs it.

Serving runs the trained module itself (`recsys.models.user_encoder`): for 1 to 8 histories an
ONNX Runtime export of it (default), TorchScript traces of it, or the module eagerly
(`RECSYS_USER_TOWER_RUNTIME`). This builds all three from the same module in one process and
prints, per runtime and batch size (1, 4, 8 histories of 1-50 items):
  * `tower_ms`: the runtime's call on cleaned histories (`TowerUserEncoder.request_path`: the
    jagged tensors + the forward; eager: the module);
  * `encode_ms`: `TowerUserEncoder.encode`, what a feed miss calls (cleaning included).
Per call, best of `--repeats` passes over `--calls` batches, one torch / ORT thread as in the server.
For a run directory, or random weights of the TikTok default's shapes (3 members x dim 256, 6,710
items, popularity coordinate, recency mean pooling).

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/user_tower_bench.py                       # TikTok-default shapes
    PYTHONPATH=. .venv/bin/python benchmarks/user_tower_bench.py --run runs/tiktok     # a trained run
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.artifact import load_run
from recsys.config import RUNTIMES
from recsys.models.config import ModelConfig
from recsys.models.ensemble import ENSEMBLE_KIND, MemberConcat
from recsys.models.user_encoder import ServedUserTower, TowerUserEncoder, history_tensors

BATCHES = (1, 4, 8)


def default_shaped(n_items: int = 6710, dim: int = 256, members: int = 3) -> nn.Module:
    config = ModelConfig(dim=dim, popularity_prior=True, history_embedding=False, user_pooling="mean")
    towers = []
    for _ in range(members):
        tower = ServedUserTower(config, n_items, 1 / 3)
        with torch.no_grad():
            tower.item_inputs.normal_()
            tower.propagated.normal_()
        towers.append(tower.eval())
    return MemberConcat(towers, [1.0] * members)


def per_call_ms(call, batches: list, repeats: int) -> float:
    for batch in batches[:100]:
        call(batch)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            call(batch)
        best = min(best, (time.perf_counter() - started) / len(batches) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run directory (default: random TikTok-default shapes)")
    parser.add_argument("--calls", type=int, default=1000, help="batches per pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    module = load_run(args.run).user_encoder.module if args.run else default_shaped()
    rng = np.random.default_rng(0)
    n_items = int(module.n_items)
    histories = {size: [[rng.integers(0, n_items, size=int(rng.integers(1, 51))).tolist() for _ in range(size)]
                        for _ in range(args.calls)] for size in BATCHES}
    out = {"encoder": "run" if args.run else "tiktok-default-shaped", "history_len": "1-50", "calls": args.calls}
    for runtime in RUNTIMES:
        started = time.perf_counter()
        encoder = TowerUserEncoder(module, ENSEMBLE_KIND, runtime=runtime)
        built_s = time.perf_counter() - started
        assert encoder.runtime == runtime, f"{runtime} fell back to {encoder.runtime}"

        def tower(cleaned: list[list[int]], encoder: TowerUserEncoder = encoder) -> np.ndarray:
            with torch.inference_mode():
                if encoder.request_path is not None:
                    return encoder.request_path(cleaned)
                return encoder.module(*history_tensors(cleaned)).numpy()

        out[runtime] = {"load_s": round(built_s, 2)}
        for size in BATCHES:
            cleaned = [[encoder.clean(h) for h in batch] for batch in histories[size]]
            out[runtime][f"tower_ms_b{size}"] = round(per_call_ms(tower, cleaned, args.repeats), 3)
            out[runtime][f"encode_ms_b{size}"] = round(per_call_ms(encoder.encode, histories[size], args.repeats), 3)
    out["load_avg_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
