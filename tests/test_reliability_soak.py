"""A short run of the soak benchmark (`benchmarks/serving_soak.py`) as a test: the same traffic mix
(feeds, similar items, keyed event posts) against a real server and real Redis, at a lower rate
for 24 s instead of 500 req/s for 10 minutes (the full run's figures are in BENCHMARKS.md).
No request may fail, server memory must not grow past warm-up, every acknowledged event must
reach the Parquet store. The schedule is a fixed number of requests per window (a busy machine
makes windows longer, not fewer), and the flusher gets a generous deadline.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import polars as pl
import pytest

from feature_store.materialize import materialize
from support.local_server import REPO, LocalServer, redis_url_of
from support.sample_runs import tiktok_mean_pool_run

sys.path.insert(0, str(REPO / "benchmarks"))
import serving_soak  # noqa: E402

pytestmark = pytest.mark.slow
NAMESPACE = "test-reliability-soak"


def test_short_soak_has_no_errors_flat_memory_and_no_lost_events(tmp_path, redis_server):
    run = tiktok_mean_pool_run(tmp_path / "run")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=tmp_path / "offline", progress=False)
    env = {**serving_soak.server_env(NAMESPACE, tmp_path / "store", tmp_path / "logs"),
           "REDIS_URL": redis_url_of(redis_server), "RECSYS_SERVE_EVENTS_FLUSH_MS": "200",
           # a loaded machine can keep every pooled connection busy for longer than the 0.25 s default,
           # which trips the breaker (503 on events) though Redis is fine: give it a generous wait
           "RECSYS_SERVE_REDIS_TIMEOUT_S": "2"}
    users = pl.read_parquet(run / "users.parquet")["user_id"].to_list()
    items = pl.read_parquet(run / "items.parquet")["item_id"].to_list()
    traffic = serving_soak.Traffic(users, items)
    lines: list[str] = []
    with LocalServer(run, env=env, log_file=tmp_path / "server.log") as server:
        windows = asyncio.run(serving_soak.soak(server.url, server.process.pid, traffic, rate=150, seconds=24,
                                                window_s=6, on_window=lines.append))
        missing = serving_soak.wait_for_events(tmp_path / "store" / "offline", run, traffic.acked, within_s=120)
    print("\n".join(lines))
    summaries = [json.loads(line) for line in lines]
    assert len(summaries) == 4 and sum(s["requests"] for s in summaries) >= 0.95 * 150 * 24
    assert sum(s["errors"] for s in summaries) == 0
    assert len(traffic.acked) > 100 and missing == 0
    growth = max(w.rss_mb for w in windows[1:]) - windows[1].rss_mb
    assert growth < 25, f"server RSS grew {growth:.1f} MB after warm-up: {[w.rss_mb for w in windows]}"
    assert "Traceback" not in Path(tmp_path / "server.log").read_text()
