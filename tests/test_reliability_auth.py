"""API keys, body/upload limits and parameter bounds, against a real uvicorn server and real Redis.

The server runs with an API key, a separate admin token, the explorer page key on, and small
limits (max_k 50, 16 KiB bodies, 64 KiB uploads) so the limits are cheap to cross. Settings that
only change which keys are accepted (reads keyed, dev mode) use the in-process app.
"""
from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from feature_store.materialize import materialize
from recsys.config import Settings
from serving.auth import PAGE_COOKIE
from serving.config import ServingConfigError, ServingSettings
from support.local_server import LocalServer, redis_url_of
from serving.main import create_app
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow
NAMESPACE = "test-reliability-auth"
API_KEY = "test-api-key-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("reliability-auth")
    run = tiktok_mean_pool_run(root / "run")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    server_env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
                  "RECSYS_STORE_DIR": str(root / "store"), "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
                  "RECSYS_SERVE_API_KEY": API_KEY, "RECSYS_SERVE_ADMIN_TOKEN": ADMIN_TOKEN,
                  "RECSYS_SERVE_PAGE_KEY": "true", "RECSYS_SERVE_MAX_K": "50",
                  "RECSYS_SERVE_MAX_BODY_BYTES": str(16 * 1024), "RECSYS_SERVE_MAX_UPLOAD_BYTES": str(64 * 1024)}
    with LocalServer(run, env=server_env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield {"client": client, "run": run, "root": root, "redis": redis_server}


def _event(event_id: str, user: str = "10", item: str = "3") -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "click"}


def _assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body


def test_writes_need_the_api_key(env):
    client = env["client"]
    body = _assert_error(client.post("/v1/events", json=_event("auth-1")), 401, "unauthorized")
    assert "X-API-Key" in body["message"]
    _assert_error(client.post("/v1/events", json=_event("auth-1"), headers={"X-API-Key": API_KEY + "x"}),
                  401, "unauthorized")
    accepted = client.post("/v1/events", json=_event("auth-1"), headers={"X-API-Key": API_KEY})
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 1, "duplicates": []}


def test_reads_stay_open_by_default(env):
    assert env["client"].get("/v1/users/10/recommendations", params={"k": 5}).status_code == 200
    assert env["client"].get("/v1/items/3/similar", params={"k": 5}).status_code == 200
    assert env["client"].get("/readyz").status_code == 200


def test_admin_needs_the_admin_token_not_the_api_key(env):
    client = env["client"]
    _assert_error(client.get("/admin/model"), 401, "unauthorized")
    _assert_error(client.get("/admin/model", headers={"X-API-Key": API_KEY}), 403, "forbidden")
    assert client.get("/admin/model", headers={"X-API-Key": ADMIN_TOKEN}).status_code == 200
    legacy = client.get("/admin/model", headers={"X-Admin-Token": ADMIN_TOKEN})  # the pre-existing header
    assert legacy.status_code == 200 and legacy.json()[0]["variant"] == "A"
    # the admin token may also write (it is the stronger key)
    assert client.post("/v1/events", json=_event("auth-admin"), headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 202


def test_explorer_page_cookie_allows_its_own_users_events_only(env):
    with httpx.Client(base_url=str(env["client"].base_url), timeout=30) as browser:
        page = browser.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{PAGE_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        me = browser.get("/v1/explorer/examples").json()["new_user_id"]
        assert me.startswith("visitor-") and browser.cookies[PAGE_COOKIE].startswith(me + ".")
        assert browser.post("/v1/events", json=_event("page-1", user=me)).status_code == 202
        _assert_error(browser.post("/v1/events", json=_event("page-2", user="10")), 403, "forbidden")
        _assert_error(browser.get("/admin/model"), 401, "unauthorized")


def test_openapi_declares_the_key_on_writes_and_admin(env):
    spec = env["client"].get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": spec["components"]["securitySchemes"][
            "ApiKey"]["description"]}
    assert spec["paths"]["/v1/events"]["post"]["security"] == [{"ApiKey": []}]
    assert spec["paths"]["/admin/model"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]


def test_bodies_over_the_limit_are_a_json_413(env):
    client, headers = env["client"], {"X-API-Key": API_KEY}
    big = {"events": [_event(f"big-{i}-" + "x" * 150) for i in range(200)]}  # ~50 KiB > 16 KiB
    _assert_error(client.post("/v1/events", json=big, headers=headers), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"events": ['
        for i in range(400):
            yield (b"," if i else b"") + b'{"event_id": "c%d", "user_id": "1", "item_id": "3", "event_type": "x"}' % i
        yield b"]}"

    chunked = client.post("/v1/events", content=chunks(), headers={**headers, "content-type": "application/json"})
    _assert_error(chunked, 413, "payload_too_large")
    upload = client.post("/v1/search", files={"image": ("big.png", PNG + b"\x00" * 70_000, "image/png")})
    _assert_error(upload, 413, "payload_too_large")
    text = client.post("/v1/search", json={"text": "x" * 70_000})
    _assert_error(text, 413, "payload_too_large")
    assert client.get("/healthz").json() == {"status": "ok"}  # the server is fine afterwards


@pytest.mark.parametrize("field,name,content,mime,status,code", [
    ("image", "notes.txt", b"hello", "text/plain", 415, "unsupported_media_type"),
    ("image", "clip.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav", 415, "unsupported_media_type"),
    ("audio", "blob.bin", b"\x00\x01\x02\x03" * 8, "application/octet-stream", 415, "unsupported_media_type"),
    ("image", "q.png", PNG, "application/octet-stream", 422, "medium_not_supported"),  # sniffed: a PNG
    ("image", "q.png", PNG, "image/png", 422, "medium_not_supported"),  # TikTok vectors are precomputed
])
def test_upload_types(env, field, name, content, mime, status, code):
    _assert_error(env["client"].post("/v1/search", files={field: (name, content, mime)}), status, code)


@pytest.mark.parametrize("method,path,kwargs", [
    ("get", "/v1/users/10/recommendations", {"params": {"k": 0}}),
    ("get", "/v1/users/10/recommendations", {"params": {"k": 51}}),  # above this server's max_k
    ("get", "/v1/users/10/recommendations", {"params": {"k": 201}}),  # above the API's
    ("get", "/v1/items/3/similar", {"params": {"k": 51}}),
    ("post", "/v1/search", {"json": {"text": "cats", "k": 51}}),
    ("post", "/v1/search", {"files": {"image": ("q.png", PNG, "image/png")}, "data": {"k": "51"}}),
    ("post", "/v1/search", {"files": {"image": ("q.png", PNG, "image/png")}, "data": {"k": "many"}}),
    ("get", "/v1/users/" + "u" * 201 + "/recommendations", {}),
    ("get", "/v1/items/" + "i" * 201 + "/similar", {}),
    ("post", "/v1/events", {"json": _event("e" * 201)}),
    ("post", "/v1/events", {"json": _event("ok", user="u" * 201)}),
])
def test_k_and_id_bounds_are_a_json_422(env, method, path, kwargs):
    if "events" in path:
        kwargs = {**kwargs, "headers": {"X-API-Key": API_KEY}}
    _assert_error(getattr(env["client"], method)(path, **kwargs), 422, "invalid_request")


def _app_client(env, monkeypatch, **settings) -> TestClient:
    monkeypatch.setenv("RECSYS_STORE_DIR", str(env["root"] / "store-inproc"))
    shared = Settings(redis_url=redis_url_of(env["redis"]), redis_namespace=NAMESPACE,
                      store_dir=env["root"] / "store-inproc")
    app = create_app(ServingSettings(run_dir=env["run"], log_dir=env["root"] / "logs-inproc", **settings), shared)
    return TestClient(app)


def test_reads_can_require_the_key(env, monkeypatch):
    with _app_client(env, monkeypatch, api_key=API_KEY, read_key_required=True) as client:
        _assert_error(client.get("/v1/users/10/recommendations"), 401, "unauthorized")
        _assert_error(client.get("/v1/explorer/examples"), 401, "unauthorized")
        assert client.get("/v1/users/10/recommendations", headers={"X-API-Key": API_KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # probes, page
        many = {"events": [_event(f"n{i}") for i in range(1001)]}  # too many, yet under the default 2 MiB
        _assert_error(client.post("/v1/events", json=many, headers={"X-API-Key": API_KEY}), 422, "invalid_request")


def test_without_a_key_loopback_is_an_open_dev_server(env, monkeypatch):
    with _app_client(env, monkeypatch) as client:
        assert client.post("/v1/events", json=_event("dev-1")).status_code == 202
        assert client.get("/admin/model").status_code == 200
        assert PAGE_COOKIE not in client.get("/").headers.get("set-cookie", "")
    assert "dev mode" in ServingSettings(host="127.0.0.1").check_auth()
    with pytest.raises(ServingConfigError, match="RECSYS_SERVE_API_KEY"):
        ServingSettings(host="0.0.0.0").check_auth()
    assert ServingSettings(host="0.0.0.0", allow_open_writes=True).check_auth()
    assert ServingSettings(host="0.0.0.0", api_key=API_KEY).check_auth() is None
    with pytest.raises(ServingConfigError, match="too short"):
        ServingSettings(api_key="short").check_auth()
    with pytest.raises(ServingConfigError, match="READ_KEY_REQUIRED"):
        ServingSettings(read_key_required=True).check_auth()
