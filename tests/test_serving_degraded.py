"""With Redis unreachable the API keeps answering (no cache, no live history), says so in /readyz,
and refuses events with a JSON 503 instead of pretending to store them."""
from __future__ import annotations

import httpx
import pytest

from support.local_server import LocalServer, free_port
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-degraded")
    run = tiktok_mean_pool_run(root / "run")
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
           "RECSYS_SERVE_REDIS_TIMEOUT_S": "0.05"}
    with LocalServer(run, env=env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http


def test_readiness_reports_degraded(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded" and ready.json()["redis"] is False
    assert "recsys_redis_up 0.0" in client.get("/metrics").text


def test_feeds_are_still_served(client):
    known = client.get("/v1/users/10/recommendations", params={"k": 10})
    assert known.status_code == 200 and len(known.json()["items"]) == 10 and not known.json()["cold_start"]
    unknown = client.get("/v1/users/new-user/recommendations", params={"k": 10})
    assert unknown.status_code == 200 and unknown.json()["cold_start"]
    assert client.get("/v1/items/3/similar").status_code == 200


def test_events_are_refused_with_a_json_503(client):
    response = client.post("/v1/events", json={"event_id": "e", "user_id": "10", "item_id": "3", "event_type": "click"})
    assert response.status_code == 503 and response.json()["code"] == "online_store_unavailable"
