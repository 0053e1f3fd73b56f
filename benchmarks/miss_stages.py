"""CPU of a feed miss, stage by stage, in-process: the serving state `recsys serve` builds (real run,
real Redis, the online store `benchmarks/serving_load.py` materialises), `Feed.recommend` called for
unique (user, k) pairs one after another.

Why in-process and sequential: the load test's server CPU per miss varies ±10 % from run to run on
this VM, more than most single changes save; here each stage is timed with `time.thread_time()`
(the event-loop thread's own CPU: one request at a time, so the CPU spent while a stage awaits is
that stage's), and two builds can be alternated in one sitting. No HTTP: add the hit path's
request overhead (~0.3 ms) for what a served miss costs.

Usage (after `benchmarks/serving_load.py --run RUN ...` has materialised the `bench-serving` store):
    RECSYS_DATA_DIR=../shared/data PYTHONPATH=. .venv/bin/python benchmarks/miss_stages.py --run runs/tiktok-e1 --misses 4000
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RECSYS_REDIS_NAMESPACE", "bench-serving")  # serving_load.py's store
os.environ.setdefault("RECSYS_SERVE_LOG_DIR", "artifacts/bench/miss-stages-logs")

import polars as pl  # noqa: E402

import serving.batching as batching  # noqa: E402
import serving.cache as cache  # noqa: E402
import serving.feed as feed_module  # noqa: E402
import serving.redis_batch as redis_batch  # noqa: E402
import serving.retriever as retriever  # noqa: E402
from feature_store.redis_server import redis_client  # noqa: E402
from recsys.config import get_settings  # noqa: E402
from serving.config import ServingSettings  # noqa: E402
from serving.state import build_state  # noqa: E402

SPENT: collections.Counter = collections.Counter()


def _timed(owner, name: str, label: str) -> None:
    """Replace owner.name by a wrapper adding its thread CPU to SPENT[label] (sync or async)."""
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):
        @functools.wraps(original)
        async def wrapper(*args, **kwargs):
            started = time.thread_time()
            try:
                return await original(*args, **kwargs)
            finally:
                SPENT[label] += time.thread_time() - started
    else:
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                SPENT[label] += time.thread_time() - started
    setattr(owner, name, wrapper)


STAGES = [(feed_module.Feed, "_compute", "miss computation (tower + search + payload)"),
          (retriever.Retriever, "search", "index search + new-item prior + merge"),
          (batching.UserVectorBatcher, "_encode", "user tower"),
          (redis_batch.TurnPipeline, "_send", "Redis round trips (lookup script + cache write)"),
          (cache.FeedCache, "_run_lookup", "of which the cache lookup"),
          (feed_module, "schema_bytes", "response schema (pydantic)"),
          (feed_module, "items_payload", "item fields"),
          (feed_module, "explore", "exploration slots"),
          (feed_module, "exposure_record", "exposure record")]


async def measure(run: Path, misses: int) -> None:
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    state = build_state(ServingSettings(run_dir=run), get_settings())
    await state.link.start()
    faiss.omp_set_num_threads(1)  # as the server's lifespan does
    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)
    client = redis_client(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    stale = list(client.scan_iter(f"{os.environ['RECSYS_REDIS_NAMESPACE']}:feed:*", count=10_000))
    if stale:
        client.unlink(*stale)
    users = pl.read_parquet(run / "users.parquet")["user_id"].to_list()
    keys = [(user, k) for k in range(10, 50) for user in users]
    random.Random(0).shuffle(keys)
    for user, k in keys[:300]:  # warm-up: code paths, connections, caches
        await state.feed.recommend(user, k, None, True)
    SPENT.clear()
    work = keys[300:300 + misses]
    started = time.thread_time()
    for user, k in work:
        await state.feed.recommend(user, k, None, True)
    total = time.thread_time() - started
    await state.close()
    print(f"{len(work)} misses: {1000 * total / len(work):.3f} ms of event-loop CPU per miss")
    for label, seconds in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"  {1e6 * seconds / len(work):7.1f} µs  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--misses", type=int, default=4000)
    args = parser.parse_args()
    for owner, name, label in STAGES:
        _timed(owner, name, label)
    import uvloop

    uvloop.install()
    asyncio.run(measure(args.run, args.misses))


if __name__ == "__main__":
    main()
