"""Events are never lost: every event acknowledged with HTTP 202 ends up in the offline Parquet store,
even when the server is SIGKILLed in the middle of a load of event posts, and a retried batch
counts once.

The flusher's contract is checked on its own first (real Redis, in-process): an entry is acked
only after its Parquet part is written, entries a dead consumer left pending are taken over, and
withdrawn entries are acked without being written. Then the whole path, with real servers.
"""
from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import polars as pl
import pytest
import redis

from feature_store.materialize import materialize
from feature_store.served_events import read_events
from serving.event_archive import EventArchiver
from serving.event_stream import FIELD, GROUP, stream_key
from support.local_server import LocalServer, is_cluster, redis_url_of
from serving.responses import dumps
from support.sample_runs import tiktok_mean_pool_run

NAMESPACE = "test-reliability-events"


def _client_factory(client: redis.Redis):
    if is_cluster(client):  # the flusher's own client to the same cluster (the server's `RedisLink.dedicated`)
        from feature_store.redis_server import redis_client  # noqa: PLC0415

        return lambda timeout_s: redis_client(redis_url_of(client), cluster=True, socket_timeout=timeout_s)
    pool = client.connection_pool

    def make(timeout_s: float) -> redis.Redis:
        kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s}
        return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))

    return make


def _add(client: redis.Redis, stream: str, n: int, prefix: str) -> list[bytes]:
    return [client.xadd(stream, {FIELD: dumps({"event_id": f"{prefix}{i}", "user_id": "u", "item_id": str(i),
                                               "event_type": "click", "ts": 1.0 + i, "received_at": 2.0,
                                               "model_version": "m", "dataset": "ds", "data_version": "v1"})})
            for i in range(n)]


def _wait(predicate, within_s: float = 60.0, what: str = "condition") -> None:
    """Poll `predicate` until true; a consumer group the archiver's thread has not created yet
    (NOGROUP) counts as "not yet", not as a failure."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {within_s}s")


def _flush_errors() -> float:
    """Failed flusher rounds so far in this process (the flusher runs in-process here)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("recsys_event_flush_errors_total") or 0.0


@pytest.mark.redis_backends
def test_flusher_acks_only_after_the_parquet_write(redis_client, tmp_path):
    stream = stream_key("flush-ack")
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be: every Parquet write fails")
    flusher = EventArchiver(_client_factory(redis_client), stream, blocker, flush_s=0.05, claim_idle_s=60).start()
    try:
        _add(redis_client, stream, 50, "a")
        _wait(lambda: redis_client.xpending(stream, GROUP)["pending"] == 50, what="entries read by the flusher")
        failed_before = _flush_errors()
        _wait(lambda: _flush_errors() >= failed_before + 2, what="several failed write attempts")
        assert redis_client.xpending(stream, GROUP)["pending"] == 50 and redis_client.xlen(stream) == 50
        blocker.unlink()  # the disk is back
        _wait(lambda: redis_client.xlen(stream) == 0, what="entries flushed, acked and deleted")
        assert redis_client.xpending(stream, GROUP)["pending"] == 0
    finally:
        flusher.close()
    stored = read_events(blocker, "ds", "v1")
    assert stored["event_id"].to_list() == [f"a{i}" for i in range(50)]
    assert stored["ts"].to_list() == [1.0 + i for i in range(50)]


@pytest.mark.redis_backends
def test_entries_of_a_dead_consumer_are_taken_over_and_withdrawn_ones_skipped(redis_client, tmp_path):
    stream = stream_key("flush-claim")
    redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = _add(redis_client, stream, 20, "b")
    redis_client.xreadgroup(GROUP, "dead-server", {stream: ">"}, count=100)  # read, never acked: then it died
    redis_client.xdel(stream, ids[0])  # withdrawn by the API after a failed online append
    flusher = EventArchiver(_client_factory(redis_client), stream, tmp_path, flush_s=0.05, claim_idle_s=0.3).start()
    try:
        _wait(lambda: redis_client.xpending(stream, GROUP)["pending"] == 0, what="pending entries taken over")
    finally:
        flusher.close()
    assert sorted(read_events(tmp_path, "ds", "v1")["event_id"]) == sorted(f"b{i}" for i in range(1, 20))
    assert redis_client.xlen(stream) == 0


@pytest.mark.slow
def test_every_acknowledged_event_survives_a_sigkill_mid_load(tmp_path, redis_server):
    run = tiktok_mean_pool_run(tmp_path / "run")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=tmp_path / "offline", progress=False)
    items = pl.read_parquet(run / "items.parquet")["item_id"].to_list()
    data_version = json.loads((run / "run.json").read_text())["data_version"]
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
           "RECSYS_STORE_DIR": str(tmp_path / "store"), "RECSYS_SERVE_LOG_DIR": str(tmp_path / "logs"),
           "RECSYS_SERVE_EVENTS_FLUSH_MS": "500", "RECSYS_SERVE_EVENTS_CLAIM_IDLE_S": "1"}
    stream = stream_key(NAMESPACE)
    acked: set[str] = set()
    posted: set[str] = set()
    unanswered: list[list[dict]] = []

    async def worker(url: str, w: int, stop: asyncio.Event) -> None:
        rng = random.Random(w)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                batch = [{"event_id": f"kill-w{w}-{n}-{j}", "user_id": str(rng.randrange(500)),
                          "item_id": rng.choice(items), "event_type": "click"} for j in range(5)]
                n += 1
                posted.update(e["event_id"] for e in batch)
                try:
                    response = await client.post("/v1/events", json={"events": batch})
                except httpx.HTTPError:
                    unanswered.append(batch)  # the server died with this batch in flight: the client retries
                    return
                assert response.status_code == 202, response.text
                body = response.json()
                assert body["accepted"] + len(body["duplicates"]) == len(batch)
                acked.update(e["event_id"] for e in batch)

    async def load_then_kill(server: LocalServer) -> None:
        stop = asyncio.Event()
        workers = [asyncio.create_task(worker(server.url, w, stop)) for w in range(8)]
        deadline = time.monotonic() + 120
        while len(acked) < 300 and time.monotonic() < deadline:  # enough load, however busy the machine
            await asyncio.sleep(0.05)
        server.process.kill()  # SIGKILL: no shutdown hook, no final flush
        server.process.wait()
        stop.set()
        await asyncio.gather(*workers)

    with LocalServer(run, env=env, log_file=tmp_path / "server-1.log") as first:
        asyncio.run(load_then_kill(first))
    pending = redis_server.xpending(stream, GROUP)["pending"]
    unflushed = redis_server.xlen(stream)
    assert len(acked) > 200 and unflushed > 0, (len(acked), unflushed)  # it really died with work left
    with LocalServer(run, env=env, log_file=tmp_path / "server-2.log") as second:
        with httpx.Client(base_url=second.url, timeout=10) as client:
            for batch in unanswered:  # client retries of the batches whose answer was lost
                retry = client.post("/v1/events", json={"events": batch})
                assert retry.status_code == 202, retry.text
                acked.update(e["event_id"] for e in batch)
        root = tmp_path / "store" / "offline"
        _wait(lambda: acked <= set(read_events(root, "tiktok", data_version)["event_id"]), within_s=120,
              what="every acknowledged event in Parquet")
        _wait(lambda: redis_server.xlen(stream) == 0, what="the stream drained")
    stored = read_events(root, "tiktok", data_version)
    assert set(stored["event_id"]) <= posted and stored["event_id"].n_unique() == stored.height
    raw_rows = sum(pl.read_parquet(p).height for p in (root / "tiktok" / data_version / "serving_events").glob("*.parquet"))
    print(f"acked {len(acked)} events ({len(unanswered)} batches retried after the kill); at the kill {unflushed} "
          f"were not yet in Parquet ({pending} read but unacknowledged); stored {stored.height}, raw rows {raw_rows}")
    assert "Traceback" not in (tmp_path / "server-2.log").read_text()


@pytest.mark.slow
def test_receipt_time_events_are_never_refused_as_out_of_order(tmp_path, redis_server, monkeypatch):
    """The server picks the time of an event sent without `ts`; a user whose newest stored event is
    later (another server's clock, a concurrent request) gets it raised, not a 422. An explicit
    older `ts` is still the client's mistake: 422, and nothing is recorded."""
    from fastapi.testclient import TestClient

    from recsys.config import Settings
    from serving.config import ServingSettings
    from serving.main import create_app

    namespace = NAMESPACE + "-order"
    run = tiktok_mean_pool_run(tmp_path / "run")
    materialize("tiktok", client=redis_server, namespace=namespace, offline_root=tmp_path / "offline", progress=False)
    shared = Settings(redis_url=redis_url_of(redis_server), redis_namespace=namespace, store_dir=tmp_path / "store")
    # a clock an hour ahead of this server's: allowed here (the default skew allowance is 5 minutes)
    app = create_app(ServingSettings(run_dir=run, log_dir=tmp_path / "logs", events_flush_ms=50,
                                     max_event_skew_s=7200), shared)
    future = time.time() + 3600
    with TestClient(app) as client:
        ahead = client.post("/v1/events", json={"event_id": "o-1", "user_id": "5", "item_id": "3", "event_type": "click",
                                                "ts": future})
        assert ahead.status_code == 202
        receipt = client.post("/v1/events", json={"events": [
            {"event_id": f"o-{i}", "user_id": "5", "item_id": str(10 + i), "event_type": "click"} for i in (2, 3)]})
        assert receipt.status_code == 202 and receipt.json() == {"accepted": 2, "duplicates": []}
        history = client.get("/v1/users/5/history", params={"n": 3}).json()["items"]
        assert [h["item_id"] for h in history] == ["13", "12", "3"] and all(h["ts"] >= int(future) for h in history)
        late = client.post("/v1/events", json={"event_id": "o-4", "user_id": "5", "item_id": "20", "event_type": "click",
                                               "ts": future - 60})
        assert late.status_code == 422 and late.json()["code"] == "event_out_of_order"
        assert client.post("/v1/events", json={"event_id": "o-4", "user_id": "5", "item_id": "20",
                                               "event_type": "click"}).json()["accepted"] == 1  # the 422 kept nothing
        data_version = json.loads((run / "run.json").read_text())["data_version"]
        root = tmp_path / "store" / "offline"
        # the flusher writes on its own schedule: wait for it (closing the app would leave unread entries in Redis)
        _wait(lambda: read_events(root, "tiktok", data_version).height >= 4, what="the four events in Parquet")
    assert read_events(root, "tiktok", data_version)["event_id"].to_list() == ["o-1", "o-2", "o-3", "o-4"]
