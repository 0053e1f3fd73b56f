"""Time for an item PUT through one worker of `recsys serve --workers N` to be served by every worker.

Starts the real server (TikTok content run, real encoders' precomputed features, local Redis),
PUTs `--items` new items one at a time, and after each PUT's acknowledgement polls
`/v1/items/{id}/similar` on fresh connections until every worker (`X-Served-By`) has answered it;
the figure per item is acknowledgement -> the slowest worker's first answer. The PUT's own worker
serves it at once (it applies the write before answering); the others pick it up from the shared
operations log every `RECSYS_SERVE_CATALOGUE_POLL_MS`.

Usage:
    .venv/bin/python benchmarks/serving_workers_catalogue.py --workers 2 --items 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: runs, local server
from support.catalogue_runs import tiktok_content_run  # noqa: E402
from support.local_server import LocalServer  # noqa: E402

BENCH = Path("artifacts/bench")
KEY = "bench-workers-catalogue-key-0123456789"


def fresh(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=20)
    args = parser.parse_args()
    from recsys.data.registry import load_dataset

    ds = load_dataset("tiktok")
    root = BENCH / "workers-catalogue"
    run = root / "run"
    if not (run / "run.json").exists():
        tiktok_content_run(run, model_version="tiktok-content-workers-bench")
    store = root / f"store-{time.time_ns()}"
    env = {"REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
           "RECSYS_REDIS_NAMESPACE": "bench-workers-catalogue", "RECSYS_STORE_DIR": str(store),
           "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "RECSYS_SERVE_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    seconds: list[float] = []
    with LocalServer(run, env=env, args=["--workers", str(args.workers)], startup_timeout_s=600,
                     log_file=root / "server.log") as server:
        pids: set[str] = set()
        while len(pids) < args.workers:
            with fresh(server.url) as client:
                if client.get("/readyz").status_code == 200:
                    pids.add(client.get("/healthz").headers["x-served-by"])
        for n in range(args.items):
            features = {m: np.asarray(ds.item_features[m][n], np.float64).tolist() for m in ("image", "audio")}
            item = f"bench-{n}-{time.time_ns()}"
            with fresh(server.url) as client:
                put = client.put(f"/v1/items/{item}", json={"features": features}, headers={"X-API-Key": KEY})
            acked = time.monotonic()
            assert put.status_code == 201, put.text
            seen: set[str] = set()
            while seen != pids:
                with fresh(server.url) as client:
                    response = client.get(f"/v1/items/{item}/similar", params={"k": 5})
                if response.status_code == 200:
                    seen.add(response.headers["x-served-by"])
                assert time.monotonic() - acked < 60, f"{item} not served by every worker within 60 s"
            seconds.append(time.monotonic() - acked)
    ordered = sorted(seconds)
    result = {"workers": args.workers, "items": len(seconds), "p50_ms": round(statistics.median(ordered) * 1000, 1),
              "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1),
              "load_avg": os.getloadavg()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
