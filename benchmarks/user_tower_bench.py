"""Cost of one request-sized user-tower encode (one history), as the feed's miss path runs it.

Serving runs the trained module itself (`recsys.models.user_encoder`): a TorchScript trace of it
for single histories, the eager module for batches. This prints both per-call times, for a run
directory or for random weights of the TikTok default's shapes (3 members x dim 256, 6,710 items,
popularity coordinate, mean pooling), one torch thread as in the server.

Usage:
    .venv/bin/python benchmarks/user_tower_bench.py                       # TikTok-default shapes
    .venv/bin/python benchmarks/user_tower_bench.py --run runs/tiktok     # a trained run
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from recsys.artifact import load_run
from recsys.models.config import ModelConfig
from recsys.models.ensemble import ENSEMBLE_KIND, MemberConcat
from recsys.models.user_encoder import ServedUserTower, TowerUserEncoder


def default_shaped(n_items: int = 6710, dim: int = 256, members: int = 3) -> TowerUserEncoder:
    config = ModelConfig(dim=dim, popularity_prior=True, history_embedding=False, user_pooling="mean")
    towers = []
    for _ in range(members):
        tower = ServedUserTower(config, n_items, 1 / 3)
        with torch.no_grad():
            tower.item_inputs.normal_()
            tower.propagated.normal_()
        towers.append(tower.eval())
    return TowerUserEncoder(MemberConcat(towers, [1.0] * members), ENSEMBLE_KIND)


def per_call_ms(encoder: TowerUserEncoder, histories: list[list[int]], repeats: int = 3) -> float:
    for history in histories[:200]:
        encoder.encode([history])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for history in histories:
            encoder.encode([history])
        best = min(best, (time.perf_counter() - started) / len(histories) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run directory (default: random TikTok-default shapes)")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = load_run(args.run).user_encoder if args.run else default_shaped()
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, encoder.n_items, size=int(rng.integers(1, 51))).tolist() for _ in range(args.calls)]
    traced = per_call_ms(encoder, histories)
    single, encoder.single = encoder.single, None
    eager = per_call_ms(encoder, histories)
    print(json.dumps({"encoder": encoder.kind, "traced": single is not None, "traced_ms": round(traced, 3),
                      "eager_ms": round(eager, 3), "calls": args.calls, "history_len": "1-50",
                      "load_avg_1m": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
