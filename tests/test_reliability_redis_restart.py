"""Redis restarts under a running server: nothing but a real restart of a real redis-server shows
whether pooled connections, the breaker, the online features and the event id claims recover.

Each test owns its redis-server (a free port, its own folder) and restarts it: with persistence
(data kept, every pooled connection dead) and without (everything gone). The app runs in-process
(TestClient: the real routes, lifespan and flusher thread) with a long breaker pause, so a single
tripped breaker would show as 503s.
"""
from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from feature_store.materialize import materialize
from recsys.config import Settings
from serving.config import ServingSettings
from feature_store.served_events import read_events
from serving.main import create_app
from support.redis_process import RedisProcess, redis_server_binary
from support.sample_runs import tiktok_mean_pool_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary on this machine")]
NAMESPACE = "test-reliability-redis-restart"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiktok_mean_pool_run(tmp_path_factory.mktemp("redis-restart") / "run")


def _app(run, redis: RedisProcess, root) -> TestClient:
    shared = Settings(redis_url=redis.url, redis_namespace=NAMESPACE, store_dir=root / "store")
    settings = ServingSettings(run_dir=run, log_dir=root / "logs", redis_retry_after_s=30.0, events_flush_ms=50)
    return TestClient(create_app(settings, shared))


def _materialize(redis: RedisProcess, root) -> None:
    materialize("tiktok", client=redis.client(), namespace=NAMESPACE, offline_root=root / "offline", progress=False)


def _event(event_id: str, user: str = "12", item: str = "42") -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "click"}


def _wait(predicate, what: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {within_s}s")


def test_stale_pooled_connections_do_not_open_the_breaker_after_a_restart(run, tmp_path):
    with RedisProcess(tmp_path / "redis", persist=True) as redis:
        _materialize(redis, tmp_path)
        with _app(run, redis, tmp_path) as client:
            for i in range(5):  # open pooled connections (async and sync clients)
                assert client.post("/v1/events", json=_event(f"warm-{i}")).status_code == 202
                assert client.get("/v1/users/12/recommendations", params={"k": 5}).status_code == 200
            redis.restart()  # same data (AOF), every pooled connection now dead
            after = client.post("/v1/events", json=_event("after-restart"))
            assert after.status_code == 202, after.text  # not a 503 with the breaker open for 30 s
            ready = client.get("/readyz").json()
            assert ready["status"] == "ok" and ready["redis"] is True
            assert client.get("/v1/users/12/history", params={"n": 1}).json()["items"][0]["item_id"] == "42"


def test_a_restart_without_persistence_keeps_event_ids_and_names_the_command(run, tmp_path):
    data_version = json.loads((run / "run.json").read_text())["data_version"]
    archive = tmp_path / "store" / "offline"
    with RedisProcess(tmp_path / "redis", persist=False) as redis:
        _materialize(redis, tmp_path)
        with _app(run, redis, tmp_path) as client:
            first = client.post("/v1/events", json=_event("before-restart"))
            assert first.json() == {"accepted": 1, "duplicates": []}
            _wait(lambda: "before-restart" in set(read_events(archive, "tiktok", data_version)["event_id"]),
                  "the event archived in Parquet")
            redis.restart()  # empty: no features, no stream, no claimed ids
            ready = client.get("/readyz").json()
            assert ready["status"] == "degraded" and ready["redis"] is True
            assert "recsys features materialize --dataset tiktok" in ready["detail"]
            refused = client.post("/v1/events", json=_event("while-empty"))
            assert refused.status_code == 503 and "recsys features materialize" in refused.json()["message"]
            _materialize(redis, tmp_path)
            assert client.get("/readyz").json()["status"] == "ok"
            retry = client.post("/v1/events", json=_event("before-restart"))  # the client's retry of an acked event
            assert retry.status_code == 202 and retry.json() == {"accepted": 0, "duplicates": ["before-restart"]}
            assert client.post("/v1/events", json=_event("after-restart")).json() == {"accepted": 1, "duplicates": []}
