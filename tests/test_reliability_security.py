"""Hostile inputs are refused, not obeyed: run files that carry code, run directories outside the
runs root, FIFOs, the explorer page's cookie used beyond its user, weak keys, a stray `.env`,
foreign Host headers, reused event ids and far-future timestamps.

The app runs in-process (FastAPI's TestClient: same routes, middleware and lifespan as uvicorn)
against the session's real Redis, over a real TikTok mean-pool run; each test builds what it
needs from that and asserts the one correct outcome.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from feature_store.materialize import materialize
from recsys.artifact import RunDirError, load_run
from recsys.config import Settings
from serving.auth import PAGE_COOKIE
from serving.config import ServingConfigError, ServingSettings
from serving.main import create_app
from serving.versions import LiveModels
from support.local_server import redis_url_of
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow
NAMESPACE = "test-reliability-security"
API_KEY = "sec-api-key-0123456789abcdef"
ADMIN_TOKEN = "sec-admin-token-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_TOKEN}
WRITE = {"X-API-Key": API_KEY}


class _RunsCommand:
    """A pickled object whose unpickling runs a shell command (what a planted checkpoint does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("reliability-security")
    runs = root / "runs"
    run = tiktok_mean_pool_run(runs / "good", model_version="sec-good-1")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    return {"root": root, "runs": runs, "run": run, "redis": redis_server}


def _client(env, **settings) -> TestClient:
    shared = Settings(redis_url=redis_url_of(env["redis"]), redis_namespace=NAMESPACE, store_dir=env["root"] / "store")
    options = {"run_dir": env["run"], "log_dir": env["root"] / "logs", "api_key": API_KEY, "admin_token": ADMIN_TOKEN,
               **settings}
    return TestClient(create_app(ServingSettings(**options), shared))


def _copy_run(env, name: str, version: str | None = None) -> Path:
    target = env["runs"] / name
    shutil.copytree(env["run"], target)
    if version:
        (target / "run.json").write_text((env["run"] / "run.json").read_text().replace("sec-good-1", version))
    return target


def _event(event_id: str, user: str = "10", item: str = "3", **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "click", **extra}


def _serving(client: TestClient) -> str:
    return client.get("/v1/users/3/recommendations", params={"k": 5}).json()["model_version"]


# ---------------------------------------------------------------- run files never execute code

def test_a_checkpoint_that_runs_code_is_refused_and_the_old_model_keeps_serving(env, tmp_path):
    marker = tmp_path / "code-ran"
    planted = _copy_run(env, "planted", "sec-planted")
    torch.save({"kind": "mean_pool", "kwargs": {}, "hook": _RunsCommand(f"touch {marker}")}, planted / "user_encoder.pt")
    with pytest.raises(RunDirError, match="user_encoder.pt: refused"):
        load_run(planted).user_encoder
    with _client(env) as client:
        response = client.post("/admin/model", json={"run_dir": str(planted)}, headers=ADMIN)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "invalid_run_dir" and "user_encoder.pt: refused" in body["message"]
        assert _serving(client) == "sec-good-1"
    assert not marker.exists(), "unpickling the planted checkpoint ran its command"


def test_a_training_checkpoint_that_runs_code_is_refused(tmp_path):
    from training.checkpoint import checkpoint_path, load_checkpoint

    marker = tmp_path / "code-ran"
    path = checkpoint_path(tmp_path / "run")
    path.parent.mkdir(parents=True)
    torch.save({"fingerprint": "f", "model": {}, "optimizer": {}, "state": {"epoch": _RunsCommand(f"touch {marker}")}},
               path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(tmp_path / "run", "f")
    assert not marker.exists()


def test_admin_switches_only_load_runs_under_the_runs_root(env, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(env["run"], outside)
    (env["runs"] / "link-out").symlink_to(outside, target_is_directory=True)  # a way out through a symlink
    inside = _copy_run(env, "inside", "sec-inside")
    with _client(env) as client:
        for attempt in (str(outside), str(env["runs"] / "link-out"), str(env["runs"] / ".." / ".." / outside.name)):
            response = client.post("/admin/model", json={"run_dir": attempt}, headers=ADMIN)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "run_dir_not_allowed" and "RECSYS_SERVE_RUNS_ROOT" in response.json()["message"]
        assert _serving(client) == "sec-good-1"
        assert client.post("/admin/model", json={"run_dir": str(inside)}, headers=ADMIN).status_code == 200
        assert _serving(client) == "sec-inside"
    with _client(env, runs_root=tmp_path) as client:  # a configured root
        assert client.post("/admin/model", json={"run_dir": str(outside)}, headers=ADMIN).status_code == 200
        assert client.post("/admin/model", json={"run_dir": str(inside)}, headers=ADMIN).json()["code"] == \
            "run_dir_not_allowed"


def test_a_fifo_as_run_json_is_refused_at_once(env):
    fifo_run = _copy_run(env, "fifo")
    (fifo_run / "run.json").unlink()
    os.mkfifo(fifo_run / "run.json")
    with _client(env) as client:
        response = client.post("/admin/model", json={"run_dir": str(fifo_run)}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert "run.json: not a regular file" in response.json()["message"]
        assert _serving(client) == "sec-good-1"


def test_a_load_that_hangs_times_out_without_blocking_the_next_switch(env, tmp_path):
    """A read that never returns (a FIFO nobody writes, read by the loader without the regular-file
    check: what a hung network disk looks like) fails the switch after the deadline; the next
    switch loads at once."""
    from serving.state import load_models

    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    settings = ServingSettings(run_dir=env["run"])
    real = load_models(settings)

    def loader(run_dir: Path):
        if run_dir == fifo:
            fifo.read_bytes()  # blocks until a writer opens the FIFO
        return real._loader(run_dir)

    models = LiveModels(loader, load_timeout_s=1.0)
    models.load_now("A", env["run"])

    async def scenario() -> None:
        with pytest.raises(RunDirError, match="did not load within 1s"):
            await models.switch("A", fifo)
        retriever, previous, _ = await asyncio.wait_for(models.switch("A", _copy_run(env, "after-hang", "sec-after")), 60)
        assert previous == "sec-good-1" and retriever.version == "sec-after"

    try:
        asyncio.run(scenario())
    finally:
        threading.Thread(target=lambda: fifo.write_bytes(b"x"), daemon=True).start()  # let the stuck reader end


# ---------------------------------------------------------------- keys, page sessions, settings, hosts

def test_the_raw_api_key_is_not_a_page_cookie(env):
    with _client(env, page_key=True, read_key_required=True) as client:
        client.cookies.set(PAGE_COOKIE, API_KEY)
        assert client.post("/v1/events", json=_event("raw-cookie-1")).status_code == 401
        client.cookies.set(PAGE_COOKIE, ADMIN_TOKEN)
        assert client.get("/admin/model").status_code == 401
        assert client.get("/v1/users/10/recommendations").status_code == 401


def test_the_page_session_acts_only_for_its_own_user_and_is_rate_limited(env, caplog):
    with _client(env, page_key=True, read_key_required=True, page_events_per_minute=3) as client:
        page = client.get("/")
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and API_KEY not in cookie
        examples = client.get("/v1/explorer/examples")
        assert examples.status_code == 403  # reads beyond its own user still need the key
        me = client.cookies[PAGE_COOKIE].split(".")[0]
        assert me.startswith("visitor-")
        assert client.get(f"/v1/users/{me}/recommendations", params={"k": 5}).status_code == 200
        assert client.get(f"/v1/users/{me}/history").status_code == 200
        assert client.get("/v1/users/10/recommendations").status_code == 403
        other = client.post("/v1/events", json=_event("page-other", user="10"))
        assert other.status_code == 403 and me in other.json()["message"]
        assert client.post("/v1/events", json={"events": [_event(f"page-{i}", user=me) for i in range(3)]}).json() == \
            {"accepted": 3, "duplicates": []}
        limited = client.post("/v1/events", json=_event("page-4", user=me))
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert client.get("/admin/model").status_code == 401
        assert client.get("/v1/explorer/examples", headers=WRITE).json()["new_user_id"] == me
        forged = client.cookies[PAGE_COOKIE].replace(me, "visitor-0000000000000000")
        client.cookies.clear()
        client.cookies.set(PAGE_COOKIE, forged)
        assert client.post("/v1/events", json=_event("forged", user="visitor-0000000000000000")).status_code == 401
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth refused")]
    assert any("/v1/users/10/recommendations" in line and "403" in line for line in refusals)
    assert not any(API_KEY in line or ADMIN_TOKEN in line for line in refusals)


@pytest.mark.parametrize("key,why", [(" " * 16, "whitespace"), ("\t" * 20, "whitespace"), ("a" * 32, "easy to guess"),
                                     ("short-key", "too short"), ("good-key-0123456789 x", "whitespace")])
def test_weak_keys_are_refused_at_start(key, why):
    with pytest.raises(ServingConfigError, match=why):
        ServingSettings(api_key=key).check_auth()
    with pytest.raises(ServingConfigError, match=why):
        ServingSettings(api_key=API_KEY, admin_token=key).check_auth()


def test_a_dotenv_file_cannot_open_the_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_SERVE_ALLOW_OPEN_WRITES", raising=False)
    (tmp_path / ".env").write_text("RECSYS_SERVE_PORT=8123\nRECSYS_SERVE_ALLOW_OPEN_WRITES=true\n")
    with pytest.raises(ServingConfigError, match=r"RECSYS_SERVE_ALLOW_OPEN_WRITES is set in a \.env file"):
        ServingSettings(host="0.0.0.0")
    (tmp_path / ".env").write_text("RECSYS_SERVE_PORT=8123\n")
    assert ServingSettings().port == 8123  # other settings still come from .env
    monkeypatch.setenv("RECSYS_SERVE_ALLOW_OPEN_WRITES", "true")  # the process environment may
    assert ServingSettings(host="0.0.0.0").allow_open_writes is True


def test_foreign_host_headers_are_refused(env, caplog):
    with _client(env) as client:
        rebound = client.get("/v1/users/3/recommendations", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 400 and rebound.json()["code"] == "invalid_host"
        assert client.post("/admin/model", json={"run_dir": str(env["run"])},
                           headers={**ADMIN, "Host": "evil.example"}).status_code == 400
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    assert any("refused request for host 'evil.example'" in r.getMessage() for r in caplog.records)
    with _client(env, allowed_hosts=["recs.example.com", "*.internal"]) as client:
        assert client.get("/healthz", headers={"Host": "recs.example.com"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "a.internal"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 400
    assert ServingSettings(host="0.0.0.0", api_key=API_KEY).host_allow_list == ["*"]


def test_refused_admin_calls_are_logged_and_readyz_shows_no_paths(env, caplog):
    caplog.set_level(logging.WARNING)
    with _client(env) as client:
        assert client.get("/admin/model", headers=WRITE).status_code == 403
        assert client.post("/admin/model", json={"run_dir": "/etc"}, headers=ADMIN).status_code == 422
        ready = client.get("/readyz").json()
        assert ready["models"][0]["run_dir"] == "good"
        assert str(env["root"]) not in client.get("/readyz").text
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("auth refused: GET /admin/model") and "403" in line for line in lines)
    assert any("model switch of variant A to '/etc' refused" in line and "run_dir_not_allowed" in line for line in lines)
    assert not any(API_KEY in line or ADMIN_TOKEN in line for line in lines)


# ---------------------------------------------------------------- events: ids name one event, ts is bounded

def test_a_reused_event_id_with_another_payload_is_a_409(env):
    with _client(env) as client:
        first = client.post("/v1/events", json=_event("reuse-1", user="21"), headers=WRITE)
        assert first.status_code == 202 and first.json()["accepted"] == 1
        retry = client.post("/v1/events", json=_event("reuse-1", user="21"), headers=WRITE)
        assert retry.status_code == 202 and retry.json() == {"accepted": 0, "duplicates": ["reuse-1"]}
        other = client.post("/v1/events", json={"events": [_event("reuse-2", user="22"), _event("reuse-1", user="22")]},
                            headers=WRITE)
        assert other.status_code == 409, other.text
        assert other.json()["code"] == "event_id_conflict" and "'reuse-1'" in other.json()["message"]
        assert client.post("/v1/events", json=_event("reuse-2", user="22"), headers=WRITE).json()["accepted"] == 1
        twice = client.post("/v1/events", json={"events": [_event("reuse-3"), _event("reuse-3", item="4")]},
                            headers=WRITE)
        assert twice.status_code == 409 and "'reuse-3'" in twice.json()["message"]


def test_event_timestamps_are_bounded_and_strictly_typed(env):
    with _client(env, max_event_skew_s=300) as client:
        future = client.post("/v1/events", json=_event("ts-far", user="31", ts=9_999_999_999), headers=WRITE)
        assert future.status_code == 422 and future.json()["code"] == "event_ts_in_future"
        assert "'ts-far'" in future.json()["message"]
        boolean = client.post("/v1/events", json=_event("ts-bool", user="31", ts=True), headers=WRITE)
        assert boolean.status_code == 422 and boolean.json()["code"] == "invalid_request"
        text = client.post("/v1/events", json=_event("ts-text", user="31", ts="1700000000"), headers=WRITE)
        assert text.status_code == 422
        # the refused far-future event poisoned nothing: later events of the user are accepted
        now = time.time()
        assert client.post("/v1/events", json=_event("ts-now", user="31", ts=now), headers=WRITE).json()["accepted"] == 1
        assert client.post("/v1/events", json=_event("ts-soon", user="31", ts=now + 60), headers=WRITE).status_code == 202
        assert client.post("/v1/events", json=_event("ts-receipt", user="31"), headers=WRITE).json()["accepted"] == 1


def test_a_rediss_url_keeps_tls(env, tmp_path):
    """A TLS-only redis-server: the server's clients (requests, online store, flusher) must speak TLS
    to it; a plain `redis://` connection to that port fails."""
    import redis as redis_py

    from serving.redis_link import RedisLink
    from support.redis_process import RedisExited, RedisProcess, redis_server_binary

    if redis_server_binary() is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server binary and the openssl command")
    server = RedisProcess(tmp_path / "tls", persist=False, tls=True)
    try:
        server.start()
    except RedisExited:
        pytest.skip("this redis-server binary was built without TLS")
    with server as tls:
        with pytest.raises(redis_py.ConnectionError):
            redis_py.Redis(port=tls.port, socket_timeout=2, socket_connect_timeout=2).ping()
        link = RedisLink.connect(tls.url, timeout_s=2.0)
        assert link.sync.ping() and link.dedicated(2.0).ping()
        assert link.address.startswith("rediss://")
        shared = Settings(redis_url=tls.url, redis_namespace=NAMESPACE, store_dir=tmp_path / "store")
        with TestClient(create_app(ServingSettings(run_dir=env["run"], log_dir=tmp_path / "logs",
                                                   redis_timeout_s=2.0), shared)) as client:
            assert client.get("/readyz").json()["redis"] is True
