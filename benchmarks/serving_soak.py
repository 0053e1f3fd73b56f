"""Soak test of the feed API: a real `recsys serve` process at the target rate for minutes, watching
for what short load tests miss: memory that creeps up, errors that start after a while, latency
that drifts, events that go missing.

Traffic (open loop, `--rate` req/s in total, latency from each request's scheduled time as in
`benchmarks/serving_loadgen.py`): 90% feeds (Zipf-popular users, k in {10, 20, 50}, so mostly cache
hits with a steady stream of misses), 5% similar items, 5% event posts with the API key (which
invalidate the user's cached feeds, so their next feed is a miss). The server runs with an API key
and flushes accepted events to a Parquet store under artifacts/bench; at the end every
acknowledged event must be there.

Every `--window` seconds it prints one JSON line: server RSS, requests, errors, p50/p99/max.
Memory is "flat" when the RSS slope over the windows after the first (warm-up) is near zero.

Usage:
    .venv/bin/python benchmarks/serving_soak.py --minutes 10 --rate 500            # runs/tiktok if trained
    .venv/bin/python benchmarks/serving_soak.py --tiktok --minutes 1 --rate 200     # mean-pool fixture
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from serving_loadgen import Connection, PhaseResult, open_loop  # benchmarks/ is on sys.path when run as a script
import sys as _sys
_sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))  # test support: sample runs, local server
from support.local_server import LocalServer

BENCH = Path("artifacts/bench")
API_KEY = "soak-api-key-0123456789abcdef"


@dataclass
class Window:
    index: int
    started_s: float
    gets: PhaseResult
    posts: PhaseResult
    rss_mb: float = 0.0

    def summary(self) -> dict:
        both = PhaseResult(self.gets.latencies + self.posts.latencies, self.gets.errors + self.posts.errors,
                           min(self.gets.started, self.posts.started), max(self.gets.finished, self.posts.finished))
        return {"window": self.index, "t_s": round(self.started_s, 1), "rss_mb": round(self.rss_mb, 1),
                **both.summary(), "event_posts": len(self.posts.latencies) + self.posts.errors,
                "event_p99_ms": self.posts.summary()["p99_ms"]}


@dataclass
class Traffic:
    """Request paths and event batches, drawn like real traffic (a few users are most of it)."""

    users: list[str]
    items: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    acked: set[str] = field(default_factory=set)
    post_errors: Counter = field(default_factory=Counter)  # HTTP status (0: connection failed) -> count
    _n: int = 0

    def __post_init__(self) -> None:
        # Zipf-like popularity: user at rank r is drawn with weight 1 / (r + 20)
        self._cum = np.cumsum(1.0 / (np.arange(len(self.users)) + 20.0)).tolist()

    def _user(self) -> str:
        return self.rng.choices(self.users, cum_weights=self._cum)[0]

    def gets(self, n: int) -> list[str]:
        paths = []
        for _ in range(n):
            if self.rng.random() < 0.947:  # of the GETs: 90% of all traffic
                paths.append(f"/v1/users/{self._user()}/recommendations?k={self.rng.choice((10, 20, 50))}")
            else:
                paths.append(f"/v1/items/{self.rng.choice(self.items)}/similar?k=10")
        return paths

    def event_batch(self) -> list[dict]:
        self._n += 1
        user = self._user()
        return [{"event_id": f"soak-{self._n}-{j}", "user_id": user, "item_id": self.rng.choice(self.items),
                 "event_type": "click"} for j in range(self.rng.randint(1, 3))]


async def post_loop(host: str, port: int, traffic: Traffic, n: int, rate: float, connections: int = 4) -> PhaseResult:
    """Open-loop event posts (`n` at `rate`/s); acknowledged event ids go to `traffic.acked`."""
    result = PhaseResult(started=time.perf_counter() + 0.1)
    next_index = 0
    headers = f"X-API-Key: {API_KEY}\r\n"

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            due = result.started + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            batch = traffic.event_batch()
            status = await conn.post("/v1/events", json.dumps({"events": batch}).encode(), headers)
            if status == 202:
                result.latencies.append(time.perf_counter() - due)
                traffic.acked.update(e["event_id"] for e in batch)
            else:
                result.errors += 1
                traffic.post_errors[status] += 1
        conn.close()

    await asyncio.gather(*[worker(Connection(host, port)) for _ in range(connections)])
    result.finished = time.perf_counter()
    return result


async def soak(url: str, pid: int, traffic: Traffic, rate: float, seconds: float, window_s: float,
               on_window=print) -> list[Window]:
    """Run the mix for `seconds` in windows of `window_s`; returns the windows (RSS sampled after each)."""
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    process = psutil.Process(pid)
    windows: list[Window] = []
    started = time.perf_counter()
    spans = [window_s] * int(seconds // window_s) + ([seconds % window_s] if seconds % window_s > 1e-6 else [])
    for span in spans:  # a fixed schedule: a server that falls behind makes windows longer, not fewer
        elapsed = time.perf_counter() - started
        n_posts = max(1, int(rate * 0.05 * span))
        n_gets = int(rate * span) - n_posts
        gets, posts = await asyncio.gather(open_loop(host, port, traffic.gets(n_gets), rate - rate * 0.05),
                                           post_loop(host, port, traffic, n_posts, rate * 0.05))
        window = Window(len(windows), elapsed, gets, posts, process.memory_info().rss / 2**20)
        windows.append(window)
        on_window(json.dumps(window.summary()))
    return windows


def rss_slope_mb_per_min(windows: list[Window]) -> float:
    """Least-squares RSS slope over the windows after the first (the first is warm-up)."""
    steady = windows[1:] if len(windows) > 2 else windows
    if len(steady) < 2:
        return 0.0
    t = np.array([w.started_s for w in steady]) / 60
    return float(np.polyfit(t, np.array([w.rss_mb for w in steady]), 1)[0])


def server_env(namespace: str, store_dir: Path, log_dir: Path) -> dict[str, str]:
    return {"REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "RECSYS_REDIS_NAMESPACE": namespace,
            "RECSYS_STORE_DIR": str(store_dir), "RECSYS_SERVE_LOG_DIR": str(log_dir),
            "RECSYS_SERVE_API_KEY": API_KEY, "RECSYS_SERVE_CACHE_TTL_S": "900"}


def wait_for_events(store_root: Path, run_dir: Path, acked: set[str], within_s: float = 30.0) -> int:
    """How many acknowledged events are missing from the Parquet store after waiting for the flusher."""
    from feature_store.served_events import read_events

    meta = json.loads((run_dir / "run.json").read_text())
    deadline = time.monotonic() + within_s
    missing = acked
    while time.monotonic() < deadline:
        stored = set(read_events(store_root, meta["dataset"], str(meta.get("data_version", "unknown")))["event_id"])
        missing = acked - stored
        if not missing:
            break
        time.sleep(0.5)
    return len(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="run directory (default: runs/tiktok when trained, else --tiktok)")
    parser.add_argument("--tiktok", action="store_true", help="the mean-pool fixture over the real TikTok features")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--window", type=float, default=30, help="seconds per reported window")
    parser.add_argument("--out", type=Path, default=BENCH / "soak.json")
    args = parser.parse_args()

    import polars as pl

    from feature_store.materialize import materialize
    from feature_store.redis_server import connect_redis
    from support.sample_runs import tiktok_mean_pool_run

    run = args.run or (Path("runs/tiktok") if not args.tiktok and (Path("runs/tiktok") / "run.json").exists() else None)
    if run is None:
        run = BENCH / "runs" / "tiktok-meanpool"
        if not (run / "run.json").exists():
            tiktok_mean_pool_run(run)
    store, logs = BENCH / "soak-store", BENCH / "soak-logs"
    shutil.rmtree(store, ignore_errors=True)
    env = server_env("bench-soak", store, logs)
    client = connect_redis(env["REDIS_URL"])
    for key in client.scan_iter("bench-soak:*", count=10_000):  # a previous soak's cache, ids and stream
        client.unlink(key)
    materialize("tiktok", client=client, namespace="bench-soak", offline_root=BENCH / "offline", progress=False)
    users = pl.read_parquet(run / "users.parquet")["user_id"].cast(pl.String).to_list()
    items = pl.read_parquet(run / "items.parquet")["item_id"].cast(pl.String).to_list()
    random.Random(1).shuffle(users)
    traffic = Traffic(users, items)
    load_before = os.getloadavg()
    with LocalServer(run, env=env, log_file=BENCH / "soak-server.log", startup_timeout_s=600) as server:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        windows = asyncio.run(soak(server.url, server.process.pid, traffic, args.rate, args.minutes * 60, args.window))
        missing = wait_for_events(store / "offline", run, traffic.acked)
    all_gets = [x for w in windows for x in w.gets.latencies]
    all_posts = [x for w in windows for x in w.posts.latencies]
    total = PhaseResult(all_gets + all_posts, sum(w.gets.errors + w.posts.errors for w in windows),
                        windows[0].gets.started, windows[-1].gets.finished)
    report = {"run": str(run), "rate": args.rate, "minutes": args.minutes, "cpus": os.cpu_count(),
              "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in os.getloadavg()],
              "total": total.summary(), "events_acked": len(traffic.acked), "events_missing_from_parquet": missing,
              "event_post_errors_by_status": dict(traffic.post_errors),
              "rss_mb_first": round(windows[0].rss_mb, 1), "rss_mb_last": round(windows[-1].rss_mb, 1),
              "rss_mb_max": round(max(w.rss_mb for w in windows), 1),
              "rss_slope_mb_per_min": round(rss_slope_mb_per_min(windows), 3),
              "windows": [w.summary() for w in windows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "windows"}, indent=2))


if __name__ == "__main__":
    main()
