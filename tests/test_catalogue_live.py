"""The live catalogue on a real server (uvicorn subprocess, real Redis, TikTok's real features):
items added with `PUT /v1/items/{id}` are found by /similar and reach feeds, `DELETE` takes them
out of every answer (under concurrent feed load), writes survive a restart and a model switch,
and bad input is a 4xx that stores nothing.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.catalogue_runs import tiktok_content_run
from support.live_logs import complete_records
from support.local_server import LocalServer, redis_env

pytestmark = [pytest.mark.slow, pytest.mark.redis_backends]  # one server per backend: single node, cluster

API_KEY = "live-catalogue-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
DEADLINE_S = 60.0


def poll(check, deadline_s: float = DEADLINE_S, every_s: float = 0.1):
    """Wait until `check()` returns a truthy value (returned), or fail after the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {deadline_s}s")


@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_server):
    from recsys.data.registry import load_dataset

    root = tmp_path_factory.mktemp("catalogue-live")
    run_a = tiktok_content_run(root / "run-a", seed=0, model_version="tiktok-content-A")
    run_b = tiktok_content_run(root / "run-b", seed=1, model_version="tiktok-content-B")
    from feature_store.materialize import materialize

    ds = load_dataset("tiktok")
    # the online histories, so events (clicks on live items) can be stored
    materialize(ds, client=redis_server, namespace="test-catalogue-live", offline_root=root / "offline", progress=False)
    env = {**redis_env(redis_server), "RECSYS_REDIS_NAMESPACE": "test-catalogue-live",
           "RECSYS_STORE_DIR": str(root / "store"), "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
           "RECSYS_SERVE_API_KEY": API_KEY, "RECSYS_SERVE_LOG_FLUSH_MS": "10", "HF_HUB_OFFLINE": "1",
           "RECSYS_SERVE_EXPLORE_SHARE": "0.1", "RECSYS_SERVE_NEW_ITEM_BOOST": "0.35"}
    return {"root": root, "a": run_a, "b": run_b, "ds": ds, "env": env, "redis": redis_server}


@pytest.fixture(scope="module")
def server(world):
    with LocalServer(world["a"], env=world["env"], log_file=world["root"] / "server.log") as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def features_of(ds, row: int, noise: float = 0.0, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    out = {}
    for medium in ("image", "audio"):
        vector = np.asarray(ds.item_features[medium][row], np.float64)
        out[medium] = (vector + noise * rng.standard_normal(vector.shape) * vector.std()).tolist()
    return out


def similar_ids(client, item_id: str, k: int = 20) -> list[str] | None:
    response = client.get(f"/v1/items/{item_id}/similar", params={"k": k})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def test_put_needs_the_api_key(client, world):
    body = {"features": features_of(world["ds"], 3), "metadata": {"title": "no key"}}
    response = client.put("/v1/items/new-nokey", json=body)
    assert response.status_code == 401, response.text
    assert similar_ids(client, "new-nokey") is None


def test_added_item_is_similar_to_its_content_twin_and_idempotent(client, world):
    ds, twin = world["ds"], 42
    body = {"features": features_of(ds, twin, noise=0.05), "metadata": {"title": "twin of 42"}}
    first = client.put("/v1/items/new-twin", json=body, headers=AUTH)
    assert first.status_code == 201, first.text
    written = first.json()
    assert written["status"] == "created" and written["media"] == ["audio", "image"]
    assert written["vector_version"].startswith("tiktok-content-A:")
    neighbours = poll(lambda: similar_ids(client, "new-twin", 5))
    assert neighbours[0] == str(twin), neighbours
    assert "new-twin" in similar_ids(client, str(twin), 5)
    again = client.put("/v1/items/new-twin", json=body, headers=AUTH)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert again.json()["vector_version"] == written["vector_version"]
    changed = client.put("/v1/items/new-twin", json={**body, "features": features_of(ds, 7, noise=0.05)}, headers=AUTH)
    assert changed.status_code == 200 and changed.json()["status"] == "updated"
    assert changed.json()["vector_version"] != written["vector_version"]
    assert poll(lambda: (similar_ids(client, "new-twin", 5) or [None])[0] == "7")


def _exposures(world) -> list[dict]:
    rows = []
    for path in sorted((world["root"] / "logs").rglob("*.jsonl")):
        rows.extend(row for row in complete_records(path) if "items" in row and "user_id" in row)
    return rows


def test_new_item_reaches_feeds_through_an_exploration_slot_with_its_propensity_logged(client, world):
    body = {"features": features_of(world["ds"], 100, noise=0.05), "metadata": {"title": "fresh"}}
    assert client.put("/v1/items/new-fresh", json=body, headers=AUTH).status_code in (200, 201)

    def in_feed():
        feed = client.get("/v1/users/11/recommendations", params={"k": 20})
        assert feed.status_code == 200, feed.text
        ids = [i["item_id"] for i in feed.json()["items"]]
        return ids if any(i.startswith("new-") for i in ids) else None

    ids = poll(in_feed)
    assert len(ids) == 20

    def logged():
        for row in _exposures(world):
            if row["user_id"] == "11" and any(i.startswith("new-") for i in row["items"]):
                return row
        return None

    row = poll(logged)
    assert len(row["propensities"]) == len(row["items"])
    for item, propensity in zip(row["items"], row["propensities"]):
        assert 0.0 < propensity <= 1.0
        if not item.startswith("new-"):
            assert propensity == 1.0


def test_a_click_on_a_live_item_is_an_event_and_leaves_the_users_feed(client, world):
    """Users click new items: the event is accepted like any other, the item is in the user's history and
    no longer in their feed; once the item is taken down, an event on it is refused (422) naming it."""
    body = {"features": features_of(world["ds"], 150, noise=0.05), "metadata": {"title": "clicked"}}
    assert client.put("/v1/items/new-clicked", json=body, headers=AUTH).status_code in (200, 201)
    poll(lambda: similar_ids(client, "new-clicked", 3))
    event = {"event_id": "click-new-clicked-1", "user_id": "17", "item_id": "new-clicked", "event_type": "click"}
    response = client.post("/v1/events", json={"events": [event]}, headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1

    def in_history():
        answer = client.get("/v1/users/17/history", params={"n": 5})
        assert answer.status_code == 200, answer.text
        return "new-clicked" in [i["item_id"] for i in answer.json()["items"]]

    poll(in_history)
    for _ in range(3):
        feed = client.get("/v1/users/17/recommendations", params={"k": 50, "exclude_seen": "true"})
        assert feed.status_code == 200 and "new-clicked" not in [i["item_id"] for i in feed.json()["items"]]
    assert client.delete("/v1/items/new-clicked", headers=AUTH).status_code == 200
    late = client.post("/v1/events", json={"events": [{**event, "event_id": "click-new-clicked-2"}]}, headers=AUTH)
    assert late.status_code == 422 and late.json()["code"] == "unknown_item" and "new-clicked" in late.json()["message"]


@pytest.mark.parametrize("case", ["wrong_size", "nan", "text_file", "image_file", "empty", "bad_metadata",
                                  "unknown_medium", "oversized"])
def test_bad_input_is_a_4xx_naming_the_problem_and_stores_nothing(client, world, case):
    ds = world["ds"]
    item = f"bad-{case}"
    good = features_of(ds, 5)
    if case == "wrong_size":
        response = client.put(f"/v1/items/{item}", json={"features": {"image": [0.1] * 64}}, headers=AUTH)
        expect, words = 422, ["features.image", "128"]
    elif case == "nan":
        raw = json.dumps({"features": {"image": good["image"][:-1] + [float("nan")], "audio": good["audio"]}})
        response = client.put(f"/v1/items/{item}", content=raw, headers={**AUTH, "content-type": "application/json"})
        expect, words = 422, ["features.image"]
    elif case == "text_file":
        response = client.put(f"/v1/items/{item}", files={"text": ("t.txt", b"a film about cats", "text/plain")},
                              headers=AUTH)
        expect, words = 422, ["text"]
    elif case == "image_file":
        from fixtures_media.media import image_bytes

        response = client.put(f"/v1/items/{item}", files={"image": ("c.png", image_bytes("coffee"), "image/png")},
                              headers=AUTH)
        expect, words = 422, ["precomputed", "features.image"]
    elif case == "empty":
        response = client.put(f"/v1/items/{item}", json={"features": {}, "metadata": {"title": "x"}}, headers=AUTH)
        expect, words = 422, ["at least one medium"]
    elif case == "bad_metadata":
        response = client.put(f"/v1/items/{item}", data={"metadata": "{not json"},
                              files={"audio": ("a.wav", b"RIFF0000WAVEfmt ", "audio/wav")}, headers=AUTH)
        expect, words = 422, ["metadata"]
    elif case == "unknown_medium":
        response = client.put(f"/v1/items/{item}", json={"features": {"video": [1.0]}}, headers=AUTH)
        expect, words = 422, ["features"]
    else:
        response = client.put(f"/v1/items/{item}", files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * (11 << 20),
                                                                     "image/png")}, headers=AUTH)
        expect, words = 413, ["too large"]
    assert response.status_code == expect, response.text
    message = response.json()["message"]
    for word in words:
        assert word in message, message
    assert similar_ids(client, item) is None
    store = world["root"] / "store" / "offline" / "catalogue" / "tiktok" / "ops.jsonl"
    assert item not in (store.read_text() if store.exists() else "")


def test_take_down_under_concurrent_feed_load_leaves_zero_appearances(client, server, world):
    body = {"features": features_of(world["ds"], 200, noise=0.05), "metadata": {"title": "to take down"}}
    assert client.put("/v1/items/new-down", json=body, headers=AUTH).status_code in (200, 201)
    users = [str(u) for u in range(20, 36)]
    poll(lambda: "new-down" in (similar_ids(client, "200", 5) or []))
    deleted_at: list[float] = []
    appearances_after: list[tuple[str, float]] = []
    seen_before = 0
    stop = threading.Event()
    errors: list[str] = []

    def hammer(user: str) -> None:
        nonlocal seen_before
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while not stop.is_set():
                started = time.monotonic()
                response = http.get(f"/v1/users/{user}/recommendations", params={"k": 20})
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                ids = [i["item_id"] for i in response.json()["items"]]
                if "new-down" in ids:
                    if deleted_at and started > deleted_at[0]:
                        appearances_after.append((user, started))
                    elif not deleted_at:
                        seen_before += 1

    threads = [threading.Thread(target=hammer, args=(u,)) for u in users[:6]]
    for t in threads:
        t.start()
    poll(lambda: seen_before > 0)  # the item is being served before the take-down
    response = client.delete("/v1/items/new-down", headers=AUTH)
    assert response.status_code == 200, response.text
    deleted_at.append(time.monotonic())
    for _ in range(3):  # meanwhile the workers keep going; every user's feed is checked three times
        for user in users:
            ids = [i["item_id"] for i in client.get(f"/v1/users/{user}/recommendations", params={"k": 20}).json()["items"]]
            assert "new-down" not in ids
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert appearances_after == []
    assert similar_ids(client, "new-down") is None
    assert "new-down" not in similar_ids(client, "200", 50)
    assert client.delete("/v1/items/new-down", headers=AUTH).status_code == 404


def test_trained_items_can_be_taken_down_too(client, world):
    victim = next(i for i in similar_ids(client, "10", 5) if not i.startswith("new-"))
    assert client.delete(f"/v1/items/{victim}", headers=AUTH).status_code == 200
    world["taken_down"] = victim
    assert similar_ids(client, victim) is None
    assert victim not in similar_ids(client, "10", 200)


def test_writes_survive_a_restart_and_follow_a_model_switch(server, world):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        body = {"features": features_of(world["ds"], 300, noise=0.05), "metadata": {"title": "durable"}}
        put = http.put("/v1/items/new-durable", json=body, headers=AUTH)
        assert put.status_code in (200, 201)
        version_a = put.json()["vector_version"]
    server.stop()
    with LocalServer(world["a"], env=world["env"], log_file=world["root"] / "server-2.log") as again:
        with httpx.Client(base_url=again.url, timeout=60) as http:
            assert similar_ids(http, "new-durable", 3)[0] == "300"
            assert similar_ids(http, "new-down") is None and similar_ids(http, world["taken_down"]) is None  # take-downs too
            online = world["redis"].hget("test-catalogue-live:catalogue:tiktok:items", "new-durable")
            assert online is not None and json.loads(online)["title"] == "durable"
            switched = http.post("/admin/model", json={"run_dir": str(world["b"])}, headers=AUTH)
            assert switched.status_code == 200, switched.text
            after = http.get("/v1/items/new-durable/similar", params={"k": 3}).json()
            assert after["model_version"] == "tiktok-content-B"
            assert after["items"][0]["item_id"] == "300"
            same = http.put("/v1/items/new-durable", json=body, headers=AUTH).json()
            assert same["status"] == "unchanged" and same["vector_version"].startswith("tiktok-content-B:")
            assert same["vector_version"].split(":")[1] != version_a.split(":")[1]
