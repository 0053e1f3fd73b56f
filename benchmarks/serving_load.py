"""Load test of the feed API: a real `recsys serve` subprocess, real Redis, loopback HTTP.

Phases (each against GET /v1/users/{id}/recommendations):
  * misses: open loop at --rate req/s, every request a (user, k) never asked before, so each one
    runs the full miss path (cache lookup + lock, online history, user tower, index, cache write);
  * hits: open loop at --rate over (user, k) pairs cached by the miss phase;
  * capacity: closed loop (--concurrency in flight) on hits, to show the ceiling.
Latency is measured from each request's *scheduled* send time (no coordinated omission), on the
client (`benchmarks/serving_loadgen.py`, raw keep-alive connections). Server-side cache counters (/metrics) are read before and after each phase to prove the
phase was what it claims (with --workers N, /metrics sums every worker's series).
Each phase also reports CPU milliseconds per request of the server's process tree, of Redis and
of the load generator (psutil / process_time over the phase): on a shared machine latency depends on
the neighbours, CPU per request much less, so it is the figure to compare builds by.

Usage:
    .venv/bin/python benchmarks/serving_load.py --run runs/tiktok --rate 500 --duration 20   # trained model
    .venv/bin/python benchmarks/serving_load.py --tiktok --rate 500 --duration 20              # mean-pool fixture
    .venv/bin/python benchmarks/serving_load.py --synthetic 1000000 --rate 500 --duration 20
    .venv/bin/python benchmarks/serving_load.py --run runs/tiktok --rate 500 --workers 2             # recsys serve --workers 2
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
from pathlib import Path

import httpx

from serving_loadgen import closed_loop, open_loop  # benchmarks/ is on sys.path when run as a script
import sys as _sys
_sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))  # test support: sample runs, local server
from support.local_server import LocalServer
from support.sample_runs import synthetic_run, tiktok_mean_pool_run

BENCH = Path("artifacts/bench")


def _counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    out = {}
    for result in ("hit", "miss", "coalesced", "bypass", "error"):
        m = re.search(rf'^recsys_cache_lookups_total{{result="{result}"}} ([0-9.e+]+)$', text, re.M)
        out[result] = float(m.group(1)) if m else 0.0
    for name in ("user_tower_calls", "user_tower_vectors"):
        m = re.search(rf"^recsys_{name}_total ([0-9.e+]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    out["computations"] = sum(float(v) for v in re.findall(r"^recsys_feed_computations_total{[^}]*} ([0-9.e+]+)$", text, re.M))
    return out


def _server_slow(url: str) -> dict[str, float]:
    """Server-side feed durations (both outcomes) at or under 10 ms and 30 ms, and the total count."""
    text = httpx.get(url + "/metrics").text
    out = {"le_0.01": 0.0, "le_0.03": 0.0, "count": 0.0}
    for outcome in ("hit", "miss"):
        for bound in ("0.01", "0.03"):
            m = re.search(rf'^recsys_feed_duration_seconds_bucket{{cache="{outcome}",le="{bound}"}} ([0-9.e+]+)$', text, re.M)
            out[f"le_{bound}"] += float(m.group(1)) if m else 0.0
        m = re.search(rf'^recsys_feed_duration_seconds_count{{cache="{outcome}"}} ([0-9.e+]+)$', text, re.M)
        out["count"] += float(m.group(1)) if m else 0.0
    return out


def process_tree_memory(pid: int) -> dict[str, float]:
    """RSS and USS (MB) of the server process and its children, summed, after the load phases."""
    import psutil  # noqa: PLC0415

    root = psutil.Process(pid)
    rss = uss = 0
    for proc in [root, *root.children(recursive=True)]:
        info = proc.memory_full_info()
        rss, uss = rss + info.rss, uss + info.uss
    return {"rss": round(rss / 2**20, 1), "uss": round(uss / 2**20, 1)}


def admin_headers(env: dict[str, str]) -> dict[str, str]:
    key = os.environ.get("RECSYS_SERVE_ADMIN_TOKEN") or env.get("RECSYS_SERVE_ADMIN_TOKEN")
    return {"X-API-Key": key} if key else {}


def _cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of the server's process tree and of Redis (0 where unreadable)."""
    import psutil

    out = {"server": 0.0, "redis": 0.0}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                out["server"] += times.user + times.system
        except psutil.Error:
            pass
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("redis-server"):
            try:
                times = proc.cpu_times()
                out["redis"] += times.user + times.system
            except psutil.Error:
                pass
    return out


async def run_phases(url: str, users: list[str], rate: float, duration: float, concurrency: int,
                     server_pids: list[int] = (), workers: int = 1) -> dict:
    n = int(rate * duration)
    keys = [(users[i % len(users)], 10 + (i // len(users)) % 40) for i in range(n)]
    assert len(set(keys)) == n, "not enough (user, k) pairs for unique misses: lower --rate/--duration"
    random.Random(0).shuffle(keys)
    path = "/v1/users/{}/recommendations?k={}"
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    results = {}
    await open_loop(host, port, [path.format(f"warmup-{i}", 20) for i in range(300)], rate)  # connections, code paths
    phases = (("misses", [path.format(u, k) for u, k in keys]),
              ("hits", [path.format(u, k) for u, k in random.Random(1).choices(keys[: n // 2], k=n)]))
    for name, paths in phases:
        before, slow_before = _counters(url), _server_slow(url)
        cpu_before, client_before = _cpu_seconds(server_pids), time.process_time()
        results[name] = (await open_loop(host, port, paths, rate)).summary()
        cpu_after, client_after = _cpu_seconds(server_pids), time.process_time()
        after, slow_after = _counters(url), _server_slow(url)
        # CPU per request: the comparison measure on a shared machine (latency depends on the neighbours)
        done = max(results[name]["requests"], 1)
        results[name]["cpu_ms_per_request"] = {
            "server": round(1000 * (cpu_after["server"] - cpu_before["server"]) / done, 3),
            "redis": round(1000 * (cpu_after["redis"] - cpu_before["redis"]) / done, 3),
            "load_generator": round(1000 * (client_after - client_before) / done, 3)}
        results[name]["server_cpu_ms_per_request"] = results[name]["cpu_ms_per_request"]["server"]
        results[name]["load_avg_1m"] = round(os.getloadavg()[0], 2)
        results[name]["server_cache"] = {k: int(after[k] - before[k]) for k in after}
        # Where a slow request spent its time: in the handler (server-side histogram) or queued
        # before it (event loop busy, or the machine's other processes holding the cores).
        count = slow_after["count"] - slow_before["count"]
        results[name]["server_side"] = {
            f"over_{ms}ms": int(count - (slow_after[f"le_{b}"] - slow_before[f"le_{b}"])) for ms, b in ((10, "0.01"), (30, "0.03"))}
        print(name, json.dumps(results[name]), flush=True)
    hot = [path.format(u, k) for u, k in keys[: n // 2]]
    results["capacity_hits"] = (await closed_loop(host, port, hot, concurrency, min(duration, 10))).summary()
    print("capacity_hits", json.dumps(results["capacity_hits"]), flush=True)
    return results


def clear_feed_cache(url: str, namespace: str) -> int:
    """Drop the cached feeds a previous run left, so the miss phase really misses."""
    from feature_store.redis_server import redis_client

    client = redis_client(url)  # RECSYS_REDIS_CLUSTER=true: a cluster client scanning every master
    keys = list(client.scan_iter(f"{namespace}:feed:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.unlink(*keys[start:start + 10_000])
    return len(keys)


def prepare(args: argparse.Namespace) -> tuple[Path, list[str], dict[str, str]]:
    """Run dir (built once, kept under artifacts/bench), user ids and server environment."""
    env = {"REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
           "RECSYS_REDIS_NAMESPACE": "bench-serving", "RECSYS_SERVE_LOG_DIR": str(BENCH / "serving-logs"),
           "RECSYS_SERVE_CACHE_TTL_S": "900"}
    if args.synthetic:  # no online features (its users have no history): a namespace of its own, not TikTok's
        env["RECSYS_REDIS_NAMESPACE"] = "bench-serving-synthetic"
    clear_feed_cache(env["REDIS_URL"], env["RECSYS_REDIS_NAMESPACE"])
    if args.synthetic:
        run = BENCH / "runs" / f"synthetic-{args.synthetic}"
        if not (run / "run.json").exists():
            synthetic_run(run, n_items=args.synthetic, dim=args.dim, n_users=20_000)
        return run, [f"u{i}" for i in range(20_000)], env
    run = args.run or BENCH / "runs" / "tiktok-meanpool"
    if not (run / "run.json").exists():
        tiktok_mean_pool_run(run)
    from feature_store.materialize import materialize
    from feature_store.redis_server import connect_redis

    materialize("tiktok", client=connect_redis(env["REDIS_URL"]), namespace=env["RECSYS_REDIS_NAMESPACE"],
                offline_root=BENCH / "offline", progress=False)
    import polars as pl

    return run, pl.read_parquet(run / "users.parquet")["user_id"].to_list(), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--tiktok", action="store_true", help="mean-pool run over the real TikTok features")
    what.add_argument("--run", type=Path, help="a trained TikTok run directory (`recsys train --dataset tiktok`)")
    what.add_argument("--synthetic", type=int, metavar="N_ITEMS", help="synthetic catalogue of N items")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=1, help="server processes (`recsys serve --workers N`)")
    args = parser.parse_args()

    run, users, env = prepare(args)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with LocalServer(run, env=env, log_file=BENCH / "serving-server.log", startup_timeout_s=1800,
                     args=["--workers", str(args.workers)] if args.workers > 1 else []) as server:
        startup_s = time.perf_counter() - started
        ready = httpx.get(server.url + "/readyz").json()
        print(f"server ready in {startup_s:.1f}s: {ready['models'][0]}", flush=True)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        results = asyncio.run(run_phases(server.url, users, args.rate, args.duration, args.concurrency,
                                          [server.process.pid], args.workers))
        server_memory = process_tree_memory(server.process.pid)
        index = httpx.get(server.url + "/admin/model", headers=admin_headers(env), timeout=30).json()[0]["index"]
    report = {"run": str(run), "model": ready["models"][0], "server_startup_s": round(startup_s, 1),
              "server_memory_mb": server_memory, "index": index, "load_avg_1m_before": load_before,
              "rate": args.rate, "duration_s": args.duration, "cpus": os.cpu_count(), "workers": args.workers,
              "load_avg_1m_after": os.getloadavg()[0], **results}
    out = args.out or BENCH / f"load-{'synthetic' if args.synthetic else 'run' if args.run else 'tiktok'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
