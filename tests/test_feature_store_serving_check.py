"""A server only reads an online store materialised for its run: same dataset, data version and window.

Real uvicorn (subprocess), real Redis. The served run is a mean-pool run over the real TikTok
features whose run.json records a 50-event feature window, like every trained run.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from feature_store.materialize import materialize
from support.local_server import LocalServer, redis_url_of
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow
NAMESPACE = "test-feature-store-serving-check"


def _wait_ready(client: httpx.Client, status_code: int, within_s: float = 60.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        response = client.get("/readyz")
        if response.status_code == status_code:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz did not answer {status_code} within {within_s}s: "
                                 f"{response.status_code} {response.text}")
        time.sleep(0.2)


def _computations(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return sum(float(v) for v in re.findall(r"^recsys_feed_computations_total{[^}]*} ([0-9.e+]+)$", text, re.M))


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-check")
    run = tiktok_mean_pool_run(root / "run", model_version="tiktok-meanpool-check")
    meta = json.loads((run / "run.json").read_text())
    meta["feature_window"] = {"size": 50, "definition": "user_history-v1"}
    (run / "run.json").write_text(json.dumps(meta))
    materialize("tiktok", history_cap=50, client=redis_server, namespace=NAMESPACE, offline_root=root / "offline",
                progress=False)
    server_env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
                  "RECSYS_SERVE_LOG_DIR": str(root / "logs")}
    with LocalServer(run, env=server_env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield {"client": client, "redis": redis_server, "root": root, "data_version": meta["data_version"]}


def _materialize(env, dataset: str, cap: int) -> None:
    materialize(dataset, history_cap=cap, client=env["redis"], namespace=NAMESPACE,
                offline_root=env["root"] / "offline", progress=False)


def test_a_store_of_another_dataset_makes_the_server_not_ready_and_says_what_to_run(env):
    client = env["client"]
    assert _wait_ready(client, 200)["status"] == "ok"
    _materialize(env, "ml-100k", 50)
    body = _wait_ready(client, 503)
    assert body["status"] == "not_ready"
    text = " ".join(body["problems"])
    assert "'ml-100k'" in text and env["data_version"] in text
    assert "recsys features materialize --dataset tiktok --history-cap 50" in text
    # its histories are never read meanwhile: the feed is still the run's own (training-time vector)
    feed = client.get("/v1/users/10/recommendations", params={"k": 5})
    assert feed.status_code == 200 and len(feed.json()["items"]) == 5
    _materialize(env, "tiktok", 50)
    assert _wait_ready(client, 200)["status"] == "ok"


def test_a_store_materialised_with_another_window_is_refused(env):
    client = env["client"]
    _materialize(env, "tiktok", 20)
    body = _wait_ready(client, 503)
    assert any("history window of 20 events" in p and "feature_window is 50" in p for p in body["problems"])
    assert any("--history-cap 50" in p for p in body["problems"])
    _materialize(env, "tiktok", 50)
    _wait_ready(client, 200)


def test_a_cached_feed_is_not_served_across_feature_versions(env):
    client = env["client"]
    _wait_ready(client, 200)
    user, params = "123", {"k": 7}
    first = client.get(f"/v1/users/{user}/recommendations", params=params)
    assert first.status_code == 200
    before = _computations(client)
    assert client.get(f"/v1/users/{user}/recommendations", params=params).json() == first.json()
    assert _computations(client) == before, "the second request must be a cache hit"
    _materialize(env, "tiktok", 50)  # a new feature version: the cached answer was computed from the old one
    deadline = time.monotonic() + 60
    while _computations(client) == before and time.monotonic() < deadline:
        assert client.get(f"/v1/users/{user}/recommendations", params=params).status_code == 200
        time.sleep(0.3)  # the server re-reads the active version pointer at most once a second
    assert _computations(client) > before, "the feed of a new feature version must be computed, not read from cache"
