"""The feed API end to end: a real uvicorn server (subprocess) on a mean-pool run built from the real
TikTok features, a real Redis holding the materialised online store, and an httpx client.

The server runs an A/B experiment between two such runs (variant B: a different model version).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from feature_store.materialize import materialize
from feature_store.online import OnlineStore
from serving.experiment import Experiment
from support.live_logs import complete_records
from support.local_server import LocalServer, redis_env
from support.sample_runs import tiktok_mean_pool_run

pytestmark = [pytest.mark.slow, pytest.mark.redis_backends]  # one server per backend: single node, cluster
NAMESPACE = "test-serving-api"
SPLIT_B = 0.3


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-api")
    run_a = tiktok_mean_pool_run(root / "run-a", model_version="tiktok-meanpool-a")
    run_b = tiktok_mean_pool_run(root / "run-b", model_version="tiktok-meanpool-b")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    server_env = {**redis_env(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
                  "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "RECSYS_SERVE_EXPERIMENT_SALT": "test-salt"}
    with LocalServer(run_a, env=server_env, args=["--run-b", str(run_b), "--split-b", str(SPLIT_B)],
                     log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield {"client": client, "url": server.url, "logs": root / "logs", "redis": redis_server,
                   "store": OnlineStore(redis_server, NAMESPACE), "log_file": root / "server.log"}


def _feed(client: httpx.Client, user: str, **params) -> dict:
    response = client.get(f"/v1/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _metric(client: httpx.Client, name: str, labels: str = "") -> float:
    """Sum of the series of `name` (whose labels contain `labels`, when given)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.M)
    lines = [line for line in client.get("/metrics").text.splitlines() if labels.strip("{}") in line]
    return sum(float(v) for line in lines for v in pattern.findall(line))


def test_recommendations_have_k_items_with_keys_version_and_variant(env):
    body = _feed(env["client"], "10", k=15)
    assert set(body) >= {"items", "model_version", "variant"}
    assert len(body["items"]) == 15 and not body["cold_start"]
    for item in body["items"]:
        assert set(item) >= {"item_id", "media", "score"} and set(item["media"]) <= {"image", "audio"}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["model_version"] == {"A": "tiktok-meanpool-a", "B": "tiktok-meanpool-b"}[body["variant"]]


def test_exclude_seen_drops_every_item_of_the_current_history(env):
    user = "10"  # 475 train interactions: the history cap decides what is "seen"
    seen = {item for item, _ in env["store"].get_user_history(user, 50)}
    with_seen = _feed(env["client"], user, k=50, exclude_seen="false")
    without = _feed(env["client"], user, k=50, exclude_seen="true")
    assert seen & {i["item_id"] for i in with_seen["items"]}, "a mean-pool user should be near their own items"
    assert not seen & {i["item_id"] for i in without["items"]}
    assert len(without["items"]) == 50


def test_event_changes_the_next_answer_and_invalidates_the_cache(env):
    client, user = env["client"], "21"
    before = _feed(client, user, k=20)
    assert _feed(client, user, k=20) == before  # second call: served from the cache
    hits_before = _metric(client, "recsys_cache_lookups_total", '{result="hit"}')
    _feed(client, user, k=20)
    assert _metric(client, "recsys_cache_lookups_total", '{result="hit"}') == hits_before + 1
    clicked = [i["item_id"] for i in client.get("/v1/items/4242/similar", params={"k": 5}).json()["items"]]
    events = [{"event_id": f"inv-{user}-{n}", "user_id": user, "item_id": item, "event_type": "click"}
              for n, item in enumerate(["4242", *clicked])]
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 202 and response.json() == {"accepted": 6, "duplicates": []}
    after = _feed(client, user, k=20)
    assert after["items"] != before["items"]
    after_ids = {i["item_id"] for i in after["items"]}
    assert not after_ids & {"4242", *clicked}  # now seen, so excluded
    assert [i for i, _ in env["store"].get_user_history(user, 6)][::-1] == ["4242", *clicked]


def test_retried_event_ids_are_not_appended_twice(env):
    client, user = env["client"], "33"
    event = {"event_id": "retry-1", "user_id": user, "item_id": "17", "event_type": "like"}
    assert client.post("/v1/events", json=event).json() == {"accepted": 1, "duplicates": []}
    length = len(env["store"].get_user_history(user))
    assert client.post("/v1/events", json=event).json() == {"accepted": 0, "duplicates": ["retry-1"]}
    assert len(env["store"].get_user_history(user)) == length


def test_unknown_item_event_is_rejected_with_422_naming_it(env):
    response = env["client"].post("/v1/events", json={"events": [
        {"event_id": "u-1", "user_id": "5", "item_id": "17", "event_type": "click"},
        {"event_id": "u-2", "user_id": "5", "item_id": "no-such-item", "event_type": "click"}]})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_item" and "no-such-item" in response.json()["message"]
    assert env["client"].post("/v1/events", json={"event_id": "u-1", "user_id": "5", "item_id": "17",
                                                  "event_type": "click"}).json()["accepted"] == 1  # nothing was kept


def test_unknown_user_gets_a_popular_and_diverse_cold_start_list(env):
    body = _feed(env["client"], "never-seen-user", k=20)
    assert body["cold_start"] and len(body["items"]) == 20
    assert len({i["item_id"] for i in body["items"]}) == 20


def test_similar_items_exclude_the_item_and_rank_by_score(env):
    body = env["client"].get("/v1/items/5/similar", params={"k": 10, "media": "audio"}).json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 and "5" not in ids and body["item_id"] == "5"
    assert env["client"].get("/v1/items/nope/similar").status_code == 404


def test_concurrent_misses_on_one_key_compute_once(env):
    before = _metric(env["client"], "recsys_feed_computations_total")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=env["url"], timeout=30) as client:
            return await asyncio.gather(*[client.get("/v1/users/77/recommendations", params={"k": 37})
                                          for _ in range(40)])

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert _metric(env["client"], "recsys_feed_computations_total") - before == 1


def test_ab_assignment_is_deterministic_and_follows_the_split(env):
    experiment = Experiment("feed-ab", "test-salt", {"A": 1 - SPLIT_B, "B": SPLIT_B})
    users = [str(u) for u in range(0, 9000, 45)]  # 200 real users
    served = {u: _feed(env["client"], u, k=5)["variant"] for u in users}
    assert served == {u: experiment.assign(u) for u in users}
    assert {u: _feed(env["client"], u, k=5)["variant"] for u in users[:20]} == {u: served[u] for u in users[:20]}
    share_b = sum(v == "B" for v in served.values()) / len(served)
    assert abs(share_b - SPLIT_B) < 0.1, share_b
    manifest = json.loads((env["logs"] / "experiment.json").read_text())
    assert manifest["name"] == "feed-ab" and manifest["variants"] == {"A": 0.7, "B": 0.3}
    assert isinstance(manifest["start_ts"], float)


def test_exposures_and_events_are_logged_as_json_lines(env):
    client = env["client"]
    body = _feed(client, "101", k=7)
    client.post("/v1/events", json={"event_id": "log-1", "user_id": "101", "item_id": "3", "event_type": "click"})
    deadline = time.time() + 60
    exposures: list[dict] = []
    while time.time() < deadline:
        exposures = complete_records(env["logs"] / "exposures.jsonl")
        if any(e["user_id"] == "101" for e in exposures):
            break
        time.sleep(0.05)
    mine = [e for e in exposures if e["user_id"] == "101"][-1]
    assert set(mine) == {"exposure_id", "ts", "user_id", "variant", "model_version", "items", "propensities", "latency_ms"}
    assert mine["propensities"] == [1.0] * len(mine["items"])  # deterministic ranking: OPE impossible, and said so
    assert mine["items"] == [i["item_id"] for i in body["items"]] and mine["variant"] == body["variant"]
    assert mine["model_version"] == body["model_version"] and isinstance(mine["ts"], float)
    while time.time() < deadline and "log-1" not in (env["logs"] / "events.jsonl").read_text():
        time.sleep(0.05)
    logged = complete_records(env["logs"] / "events.jsonl")
    event = next(e for e in logged if e["event_id"] == "log-1")
    assert set(event) == {"event_id", "ts", "user_id", "item_id", "event_type"} and event["item_id"] == "3"


def test_search_by_a_medium_the_run_cannot_embed_is_a_clear_422(env):
    text = env["client"].post("/v1/search", json={"text": "dancing cats"})
    assert text.status_code == 422 and "no text items" in text.json()["message"]
    image = env["client"].post("/v1/search", files={"image": ("q.png", b"\x89PNG....", "image/png")})
    assert image.status_code == 422 and "precomputed" in image.json()["message"]


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("get", "/v1/users/1/recommendations", {"params": {"k": 0}}, 422),
    ("get", "/v1/users/1/recommendations", {"params": {"k": "many"}}, 422),
    ("get", "/v1/users/1/recommendations", {"params": {"media": "video"}}, 422),
    ("get", "/v1/users/1/recommendations", {"params": {"media": "text"}}, 422),
    ("post", "/v1/events", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
    ("post", "/v1/events", {"json": {"events": []}}, 422),
    ("post", "/v1/events", {"json": {"event_id": "x"}}, 422),
    ("post", "/v1/search", {"content": b"plain", "headers": {"content-type": "text/plain"}}, 415),
    ("post", "/v1/search", {"json": {"text": ""}}, 422),
    ("get", "/v1/nothing-here", {}, 404),
    ("delete", "/v1/events", {}, 405),
    ("post", "/admin/model", {"json": {"run_dir": "/definitely/not/a/run"}}, 422),
])
def test_errors_are_json_with_a_message_and_a_4xx_status(env, method, path, kwargs, status):
    response = getattr(env["client"], method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] and body["message"] and "Traceback" not in response.text


def test_openapi_documents_every_route_with_response_models(env):
    spec = env["client"].get("/openapi.json").json()
    for path in ("/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar", "/v1/search", "/v1/events",
                 "/admin/model", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    feed = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]
    assert feed["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Recommendations")
    assert feed["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"multipart/form-data", "application/json"} <= set(spec["paths"]["/v1/search"]["post"]["requestBody"]["content"])


def test_health_readiness_and_metrics(env):
    client = env["client"]
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["redis"] and {m["variant"] for m in ready["models"]} == {"A", "B"}
    text = client.get("/metrics").text
    assert 'recsys_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/users/{user_id}/recommendations"' in text
    assert "recsys_cache_hit_ratio" in text and 'recsys_index_items{kind="flat"' in text
    assert "Traceback" not in env["log_file"].read_text()


def test_docs_are_served_offline_and_the_model_is_labelled(env):
    """/docs and /redoc load their scripts from this server (no CDN: they work offline), /docs is a
    labelled route in the latency metric, and `recsys_model_info` names what each variant serves."""
    client = env["client"]
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page).text
        assert asset in html and "cdn." not in html and "unpkg" not in html
        src = next(part.split('"')[0] for part in html.split('src="')[1:] if asset in part.split('"')[0])
        script = client.get(src)
        assert script.status_code == 200 and len(script.content) > 100_000, src
    text = client.get("/metrics").text
    assert 'route="/docs"' in text and 'route="unmatched"' not in text.split("recsys_http_request_duration_seconds_count")[0]
    info = [line for line in text.splitlines() if line.startswith("recsys_model_info{")]
    assert {line.split('variant="')[1].split('"')[0] for line in info} == {"A", "B"}
    assert all('dataset="tiktok"' in line and line.endswith(" 1.0") for line in info)
    assert 'recsys_cache_lookups_total{result="hit"}' in text and 'recsys_cache_lookups_total{result="miss"}' in text
