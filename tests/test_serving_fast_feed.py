"""The feed's fast path (`serving.api.fast_feed`) answers exactly what the FastAPI route answers.

Two in-process apps on the same run, Redis and online store, one with the fast path and one
without, get the same requests: status, headers and body must be equal, valid or not. The cache
is off (each request computes) and exploration slots are off (no randomness), so equal bodies
mean equal computations, not one app reading the other's cached answer. A counter on the fast
path shows which requests it answered itself; the rest went on to the route.
"""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from feature_store.materialize import materialize
from recsys.config import Settings
from serving.api.fast_feed import FeedFastPath
from serving.config import ServingSettings
from serving.main import create_app
from support.local_server import redis_url_of
from support.sample_runs import tiktok_mean_pool_run

NAMESPACE = "test-fast-feed"
API_KEY = "test-api-key-0123456789abcdef"

VALID = [
    "/v1/users/10/recommendations",
    "/v1/users/10/recommendations?k=5",
    "/v1/users/10/recommendations?k=007",
    "/v1/users/10/recommendations?k=5&media=image",
    "/v1/users/10/recommendations?k=7&media=image,audio&exclude_seen=false",
    "/v1/users/10/recommendations?k=7&media=%20Audio%20&exclude_seen=1",
    "/v1/users/10/recommendations?k=3&media=",
    "/v1/users/10/recommendations?k=3&unknown=param",
    "/v1/users/no-such-user/recommendations?k=4",  # cold start
    "/v1/users/a%20b%C3%A9/recommendations?k=4",  # percent-encoded id
]
INVALID = [  # each goes on to the route, which refuses it with its own error body
    "/v1/users/10/recommendations?k=0",
    "/v1/users/10/recommendations?k=-1",
    "/v1/users/10/recommendations?k=abc",
    "/v1/users/10/recommendations?k=201",
    "/v1/users/10/recommendations?k=60",  # above this server's max_k (50), within the API's 200
    "/v1/users/10/recommendations?k=",
    "/v1/users/10/recommendations?media=video",
    "/v1/users/10/recommendations?media=" + "image," * 20,
    "/v1/users/10/recommendations?exclude_seen=maybe",
    "/v1/users/" + "u" * 201 + "/recommendations",
]
ROUTE_ONLY = [  # accepted, but unusual enough that the fast path leaves them to the route
    "/v1/users/10/recommendations?k=5&k=6",
    "/v1/users/10/recommendations?exclude_seen=yes",
    "/v1/users/10/recommendations?k=5.0",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("fast-feed")
    run = tiktok_mean_pool_run(root / "run")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    return {"run": run, "root": root, "redis": redis_server}


def _client(env, name: str, fast: bool, **settings) -> TestClient:
    shared = Settings(redis_url=redis_url_of(env["redis"]), redis_namespace=NAMESPACE, store_dir=env["root"] / "store")
    serving = ServingSettings(run_dir=env["run"], log_dir=env["root"] / f"logs-{name}", fast_feed_route=fast,
                              cache_enabled=False, explore_share=0.0, max_k=50, **settings)
    return TestClient(create_app(serving, shared))


@pytest.fixture
def answered(monkeypatch) -> list[str]:
    """Paths the fast path answered itself."""
    seen: list[str] = []
    original = FeedFastPath._answer

    async def counting(self, state, params, scope, receive, send):  # noqa: ANN001
        seen.append(scope["path"])
        await original(self, state, params, scope, receive, send)

    monkeypatch.setattr(FeedFastPath, "_answer", counting)
    return seen


def _same(fast: TestClient, route: TestClient, path: str, headers: dict | None = None) -> int:
    a, b = fast.get(path, headers=headers), route.get(path, headers=headers)
    assert a.status_code == b.status_code, (path, a.text, b.text)
    assert a.content == b.content, path
    assert dict(a.headers) == dict(b.headers), path
    return a.status_code


def _timed(client: TestClient) -> float:
    """Requests the latency histogram counted under the feed route's template with status 200."""
    text = client.get("/metrics").text
    match = re.search(r'^recsys_http_request_duration_seconds_count\{method="GET",'
                      r'route="/v1/users/\{user_id\}/recommendations",status="200"\} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_fast_path_answers_valid_requests_exactly_as_the_route(env, answered):
    with _client(env, "fast", True) as fast, _client(env, "route", False) as route:
        before = _timed(fast)
        for path in VALID:
            assert _same(fast, route, path) == 200, path
        assert len(answered) == len(VALID)  # the fast app's requests, none of the route app's
        assert _timed(fast) - before == 2 * len(VALID), "both ways in are timed under the route's template"
        body = fast.get("/v1/users/10/recommendations?k=5&media=image").json()
        assert len(body["items"]) == 5 and all("image" in item["media"] for item in body["items"])
        assert fast.get("/v1/users/10/recommendations").json()["cold_start"] is False


def test_invalid_and_unusual_requests_go_on_to_the_route(env, answered):
    with _client(env, "fast", True) as fast, _client(env, "route", False) as route:
        for path in INVALID:
            assert _same(fast, route, path) == 422, path
        for path in ROUTE_ONLY:
            assert _same(fast, route, path) == 200, path
        assert answered == []
        body = fast.get("/v1/users/10/recommendations?k=60").json()
        assert body["code"] == "invalid_request" and "50" in body["message"]


def test_keyed_reads_need_the_key_on_the_fast_path_too(env, answered):
    keyed = {"api_key": API_KEY, "read_key_required": True}
    with _client(env, "fast-keyed", True, **keyed) as fast, _client(env, "route-keyed", False, **keyed) as route:
        path = "/v1/users/10/recommendations?k=5"
        assert _same(fast, route, path) == 401
        assert _same(fast, route, path, {"X-API-Key": API_KEY + "x"}) == 401
        assert answered == []
        assert _same(fast, route, path, {"X-API-Key": API_KEY}) == 200
        assert answered == ["/v1/users/10/recommendations"]


def test_feed_errors_raised_on_the_fast_path_keep_their_shape(env, answered):
    """A medium this model has no items of is refused by `Feed.recommend` itself (after parsing)."""
    with _client(env, "fast", True) as fast, _client(env, "route", False) as route:
        path = "/v1/users/10/recommendations?media=text"
        assert _same(fast, route, path) == 422
        assert answered == [path.split("?")[0]]
        assert fast.get(path).json()["code"] == "medium_not_available"
