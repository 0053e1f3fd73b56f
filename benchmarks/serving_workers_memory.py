"""Memory per worker of `recsys serve --workers N` at a large synthetic catalogue (default 1M x 64).

Starts the real server (uvicorn workers, real Redis) for each (index kind, N), sends feed requests
on fresh connections until every worker has answered `--warm` of them (so each worker has touched
its index), then reads each worker's memory with psutil: RSS (what `top` shows; counts shared
file pages in every process), PSS (shared pages split between the processes that map them: the
fair share) and USS (pages only this process holds: what one more worker costs).

Usage:
    .venv/bin/python benchmarks/serving_workers_memory.py --items 1000000 --dim 64 --kinds flat,ivf --workers 1,4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: sample runs, local server
from support.local_server import LocalServer  # noqa: E402
from support.sample_runs import synthetic_run  # noqa: E402

BENCH = Path("artifacts/bench")


def _get(url: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return client.get(path)


def measure(run: Path, kind: str, workers: int, warm: int, users: int) -> dict:
    env = {"REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
           "RECSYS_REDIS_NAMESPACE": "bench-workers-memory", "RECSYS_SERVE_LOG_DIR": str(BENCH / "workers-logs"),
           "RECSYS_CACHE_DIR": str(BENCH / "cache"), "RECSYS_SERVE_CACHE_ENABLED": "false"}
    started = time.perf_counter()
    with LocalServer(run, env=env, args=["--workers", str(workers), "--index", kind], startup_timeout_s=1800,
                     log_file=BENCH / f"workers-memory-{kind}-{workers}.log") as server:
        ready_s = time.perf_counter() - started
        answered: dict[int, int] = {}
        deadline = time.monotonic() + 600
        rng = random.Random(0)
        while (len(answered) < workers or min(answered.values()) < warm) and time.monotonic() < deadline:
            response = _get(server.url, f"/v1/users/u{rng.randrange(users)}/recommendations?k=20")
            assert response.status_code == 200, response.text
            pid = int(response.headers["x-served-by"])
            answered[pid] = answered.get(pid, 0) + 1
        per_worker = []
        for pid in sorted(answered):
            info = psutil.Process(pid).memory_full_info()
            per_worker.append({"pid": pid, "requests": answered[pid], "rss_mb": round(info.rss / 2**20, 1),
                               "pss_mb": round(info.pss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)})
        supervisor = psutil.Process(server.process.pid).memory_full_info() if workers > 1 else None
    out = {"kind": kind, "workers": workers, "ready_s": round(ready_s, 1), "per_worker": per_worker,
           "mean_rss_mb": round(sum(w["rss_mb"] for w in per_worker) / len(per_worker), 1),
           "mean_pss_mb": round(sum(w["pss_mb"] for w in per_worker) / len(per_worker), 1),
           "mean_uss_mb": round(sum(w["uss_mb"] for w in per_worker) / len(per_worker), 1),
           "total_pss_mb": round(sum(w["pss_mb"] for w in per_worker), 1)}
    if supervisor is not None:
        out["supervisor_pss_mb"] = round(supervisor.pss / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--kinds", default="flat,ivf", help="index kinds to serve (comma-separated)")
    parser.add_argument("--workers", default="1,4", help="worker counts (comma-separated)")
    parser.add_argument("--warm", type=int, default=50, help="feed requests each worker answers before measuring")
    parser.add_argument("--out", type=Path, default=BENCH / "workers-memory.json")
    args = parser.parse_args()
    run = BENCH / "runs" / f"synthetic-{args.items}x{args.dim}"
    users = 10_000
    if not (run / "run.json").exists():
        synthetic_run(run, n_items=args.items, dim=args.dim, n_users=users)
    vectors_mb = (run / "item_vectors.npy").stat().st_size / 2**20
    results = []
    for kind in args.kinds.split(","):
        for workers in (int(n) for n in args.workers.split(",")):
            result = measure(run, kind, workers, args.warm, users)
            print(json.dumps(result), flush=True)
            results.append(result)
    report = {"items": args.items, "dim": args.dim, "item_vectors_mb": round(vectors_mb, 1),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
              "load_avg": os.getloadavg(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"item_vectors.npy {vectors_mb:.0f} MB; written {args.out}")


if __name__ == "__main__":
    main()
