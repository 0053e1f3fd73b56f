"""`recsys serve --workers 2` against a real server: the worker processes share everything through
Redis and the offline store, so a write through one worker is what every worker serves.

Each request opens a new connection (no keep-alive), so the kernel spreads them over the workers;
`X-Served-By` names the process that answered, and the tests repeat a request until each worker
has answered it, with a generous deadline, instead of assuming which worker gets which request.
"""
from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest

from feature_store.materialize import materialize
from support.catalogue_runs import tiktok_content_run
from support.local_server import LocalServer, redis_env

pytestmark = pytest.mark.slow

WORKERS = 2
API_KEY = "workers-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
DEADLINE_S = 90.0
NAMESPACE = "test-serving-workers"


def request(server: LocalServer, method: str, path: str, **kwargs) -> httpx.Response:
    """One request on a fresh connection (so any worker may take it)."""
    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return client.request(method, path, **kwargs)


def until_every_worker(server: LocalServer, method: str, path: str, accept, **kwargs) -> dict[str, float]:
    """Repeat the request until each worker's answer satisfied `accept` once; returns pid -> seconds."""
    started, done = time.monotonic(), {}
    while len(done) < WORKERS:
        assert time.monotonic() - started < DEADLINE_S, f"only workers {sorted(done)} answered {path} as expected"
        response = request(server, method, path, **kwargs)
        pid = response.headers["x-served-by"]
        if pid not in done and accept(response):
            done[pid] = time.monotonic() - started
    return done


def on_worker(server: LocalServer, pid: str, method: str, path: str, attempts: list | None = None,
              **kwargs) -> httpx.Response:
    """The request answered by worker `pid` (repeated on fresh connections until that one takes it;
    only for idempotent requests). `attempts`, when given, collects every response, other workers' too."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        response = request(server, method, path, **kwargs)
        if attempts is not None:
            attempts.append(response)
        if response.headers["x-served-by"] == pid:
            return response
    raise AssertionError(f"worker {pid} never took {path}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-workers")
    run = tiktok_content_run(root / "run", model_version="tiktok-content-workers")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    env = {**redis_env(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_STORE_DIR": str(root / "store"),
           "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "RECSYS_SERVE_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
    with LocalServer(run, env=env, args=["--workers", str(WORKERS)], log_file=root / "server.log",
                     startup_timeout_s=300) as srv:
        srv.pids = sorted(until_every_worker(srv, "GET", "/readyz", lambda r: r.status_code == 200))
        srv.root = root
        yield srv


def test_n_workers_answer_as_separate_processes(server):
    assert len(server.pids) == WORKERS and all(int(pid) != server.process.pid for pid in server.pids)


def test_an_item_put_through_one_worker_is_served_by_every_worker_then_taken_down_everywhere(server):
    from recsys.data.registry import load_dataset

    ds = load_dataset("tiktok")
    features = {m: np.asarray(ds.item_features[m][42], np.float64).tolist() for m in ("image", "audio")}
    item = f"workers-{uuid.uuid4().hex[:8]}"
    put = request(server, "PUT", f"/v1/items/{item}", json={"features": features, "metadata": {"title": "x"}},
                  headers=AUTH)
    assert put.status_code == 201, put.text
    served = until_every_worker(server, "GET", f"/v1/items/{item}/similar?k=5", lambda r: r.status_code == 200)
    assert set(served) == set(server.pids)
    # ... and the other worker finds it among the trained item's neighbours too
    until_every_worker(server, "GET", "/v1/items/42/similar?k=5",
                       lambda r: item in [i["item_id"] for i in r.json()["items"]])

    gone = request(server, "DELETE", f"/v1/items/{item}", headers=AUTH)
    assert gone.status_code == 200, gone.text
    until_every_worker(server, "GET", f"/v1/items/{item}/similar?k=5", lambda r: r.status_code == 404)
    until_every_worker(server, "GET", "/v1/items/42/similar?k=5",
                       lambda r: item not in [i["item_id"] for i in r.json()["items"]])


def _metric(server: LocalServer, pid: str, name: str, *label_parts: str) -> float:
    """Sum of the samples of `name` whose label set contains every one of `label_parts`, as worker
    `pid`'s /metrics reports them (with --workers, summed over every worker)."""
    text = on_worker(server, pid, "GET", "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(part in line for part in label_parts))


def _hits(server: LocalServer, pid: str) -> float:
    return _metric(server, pid, "recsys_cache_lookups_total", 'result="hit"')


def test_the_feed_cache_is_shared_a_miss_on_one_worker_is_a_hit_on_the_other(server):
    first, second = server.pids
    user, path = "17", "/v1/users/17/recommendations?k=10"
    computed = on_worker(server, first, "GET", path)
    assert computed.status_code == 200, computed.text
    hits_before = _hits(server, second)
    attempts: list[httpx.Response] = []
    cached = on_worker(server, second, "GET", path, attempts)  # every attempt, on either worker, is a hit
    assert cached.json()["items"] == computed.json()["items"], user
    assert all(r.json()["items"] == computed.json()["items"] for r in attempts)
    assert _hits(server, second) == _hits(server, first) == hits_before + len(attempts)


def test_metrics_sum_every_workers_series_whichever_worker_answers(server):
    first, second = server.pids
    route = ('route="/healthz"', 'status="200"')
    before = _metric(server, first, "recsys_http_request_duration_seconds_count", *route)
    answered: dict[str, int] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(answered) < WORKERS or min(answered.values()) < 3:
        assert time.monotonic() < deadline, f"answers per worker: {answered}"
        response = request(server, "GET", "/healthz")
        answered[response.headers["x-served-by"]] = answered.get(response.headers["x-served-by"], 0) + 1
    total = before + sum(answered.values())
    for pid in (first, second):  # each worker reports both workers' requests, not only its own
        assert _metric(server, pid, "recsys_http_request_duration_seconds_count", *route) == total
        text = on_worker(server, pid, "GET", "/metrics").text
        assert len([line for line in text.splitlines() if line.startswith("recsys_cache_hit_ratio ")]) == 1


def test_one_event_id_is_accepted_once_whichever_worker_gets_it(server):
    event = {"event_id": f"workers-{uuid.uuid4().hex[:8]}", "user_id": "21", "item_id": "17", "event_type": "like"}
    answers: dict[str, dict] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(answers) < WORKERS:  # retries of one event until both workers have taken one
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} took the event"
        response = request(server, "POST", "/v1/events", json=event, headers=AUTH)
        assert response.status_code == 202, response.text
        answers.setdefault(response.headers["x-served-by"], []).append(response.json())
    bodies = [body for per_worker in answers.values() for body in per_worker]
    assert sum(body["accepted"] for body in bodies) == 1
    assert all(body["duplicates"] == [event["event_id"]] for body in bodies if not body["accepted"])


def test_a_model_switch_through_one_worker_reaches_every_worker(server):
    """POST /admin/model is answered by one worker; the others follow the announcement, and the
    model-info gauge (summed over workers) then names only the new version."""
    run_b = tiktok_content_run(server.root / "run-b", seed=1, model_version="tiktok-content-workers-b")
    switched = request(server, "POST", "/admin/model", json={"run_dir": str(run_b)}, headers=AUTH)
    assert switched.status_code == 200, switched.text
    assert switched.json()["model"]["model_version"] == "tiktok-content-workers-b"
    followed = until_every_worker(server, "GET", "/admin/model",
                                  lambda r: r.json()[0]["model_version"] == "tiktok-content-workers-b", headers=AUTH)
    assert set(followed) == set(server.pids)
    until_every_worker(server, "GET", "/v1/users/17/recommendations?k=5",
                       lambda r: r.json()["model_version"] == "tiktok-content-workers-b")
    for pid in server.pids:
        assert _metric(server, pid, "recsys_model_info", 'model_version="tiktok-content-workers-b"') == 1
        assert _metric(server, pid, "recsys_model_info", 'model_version="tiktok-content-workers"') == 0
    back = request(server, "POST", "/admin/model", json={"run_dir": str(server.run_dir)}, headers=AUTH)
    assert back.status_code == 200, back.text
    until_every_worker(server, "GET", "/admin/model",
                       lambda r: r.json()[0]["model_version"] == "tiktok-content-workers", headers=AUTH)
