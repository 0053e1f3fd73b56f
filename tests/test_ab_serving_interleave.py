"""Interleave mode of the real server: every feed is a team draft of the two runs, the exposure
log records each item's team, clicks posted through the API are credited, and `recsys ab-report`
reads the server's own logs into an interleaving preference.

Real uvicorn subprocess, real Redis with TikTok's online features, two runs that rank differently.
"""
from __future__ import annotations

import json
import shutil
import time

import httpx
import numpy as np
import pytest

from feature_store.materialize import materialize
from support.live_logs import complete_records
from support.local_server import LocalServer, redis_url_of
from support.sample_runs import tiktok_mean_pool_run
from training.ab.online import analyse_online

pytestmark = pytest.mark.slow
NAMESPACE = "test-ab-interleave"
USERS = [str(u) for u in range(100, 140)]


def _noisier_copy(run_a, run_b):
    """Run B: run A's vectors plus noise (a different, worse ranker), under its own model version."""
    shutil.copytree(run_a, run_b)
    rng = np.random.default_rng(0)
    for name in ("item_vectors.npy", "user_vectors.npy"):
        vectors = np.load(run_b / name)
        noisy = vectors + 0.08 * rng.standard_normal(vectors.shape).astype(np.float32)
        np.save(run_b / name, (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32))
    meta = json.loads((run_b / "run.json").read_text())
    (run_b / "run.json").write_text(json.dumps({**meta, "model_version": "tiktok-meanpool-noisy"}))
    return run_b


def _wait_for(predicate, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met within the deadline")


def test_interleaved_feeds_are_logged_with_teams_and_reported(tmp_path, redis_server):
    run_a = tiktok_mean_pool_run(tmp_path / "run-a", model_version="tiktok-meanpool-a")
    run_b = _noisier_copy(run_a, tmp_path / "run-b")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=tmp_path / "offline", progress=False)
    logs = tmp_path / "logs"
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
           "RECSYS_SERVE_LOG_DIR": str(logs), "RECSYS_SERVE_EXPERIMENT_MODE": "interleave",
           "RECSYS_STORE_DIR": str(tmp_path / "store")}
    with LocalServer(run_a, env=env, args=["--run-b", str(run_b)], log_file=tmp_path / "server.log") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        bodies = {}
        for user in USERS:
            response = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
            assert response.status_code == 200, response.text
            bodies[user] = response.json()
        clicks = []
        for n, user in enumerate(USERS[:20]):
            item = bodies[user]["items"][n % 10]["item_id"]
            event = {"event_id": f"il-{n}", "user_id": user, "item_id": item, "event_type": "click"}
            assert client.post("/v1/events", json=event).status_code in (200, 202)
            clicks.append((user, item))

        def logged():
            path = logs / "exposures.jsonl"
            rows = complete_records(path)
            return rows if len({r["user_id"] for r in rows}) == len(USERS) else None

        exposures = _wait_for(logged)
        _wait_for(lambda: (logs / "events.jsonl").exists()
                  and (logs / "events.jsonl").read_text().count('"il-') == len(clicks))

    for body in bodies.values():
        assert body["variant"] == "interleaved" and body["model_version"] == "tiktok-meanpool-a+tiktok-meanpool-noisy"
        assert len(body["items"]) == 10 == len({i["item_id"] for i in body["items"]})
    by_user = {r["user_id"]: r for r in exposures}
    both_teams = 0
    for user, body in bodies.items():
        record = by_user[user]
        assert record["variant"] == "interleaved" and record["items"] == [i["item_id"] for i in body["items"]]
        assert len(record["teams"]) == 10 and set(record["teams"]) <= {"A", "B"}
        assert abs(record["teams"].count("A") - record["teams"].count("B")) <= 1
        both_teams += len(set(record["teams"])) == 2
    assert both_teams == len(USERS)
    assert json.loads((logs / "experiment.json").read_text())["mode"] == "interleave"

    report = analyse_online(logs)
    il = report.to_dict()["interleaving"]
    assert il["users"] == len(USERS) and sum(il["credited_clicks"].values()) == len(clicks)
    teams_clicked = [by_user[u]["teams"][by_user[u]["items"].index(i)] for u, i in clicks]
    assert il["credited_clicks"] == {"A": teams_clicked.count("A"), "B": teams_clicked.count("B")}
    assert report.decision in ("ship", "dont_ship", "keep_running") and report.reasons
