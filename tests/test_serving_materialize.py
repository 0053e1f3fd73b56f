"""`recsys serve --materialize`: a server started on an empty online store materialises the run's
features (dataset, window, split) first, so it starts ready instead of serving empty histories;
on a store that already serves the run it does nothing. Real server, real Redis, real TikTok data."""
from __future__ import annotations

import json
import os

import httpx
import pytest

from feature_store.online import OnlineStore
from recsys.config import get_settings
from support.local_server import LocalServer, redis_env
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow
NAMESPACE = "test-serving-materialize"


def test_serve_materialize_fills_an_empty_store_then_leaves_a_serving_one_alone(tmp_path, redis_server, monkeypatch,
                                                                                 capsys):
    run = tiktok_mean_pool_run(tmp_path / "run", model_version="tiktok-meanpool-materialize")
    meta = json.loads((run / "run.json").read_text())
    meta["feature_window"] = {"size": 30, "definition": "user_history-v1"}
    (run / "run.json").write_text(json.dumps(meta))
    store = OnlineStore(redis_server, NAMESPACE)
    assert store.active_version() is None
    env = {**redis_env(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_STORE_DIR": str(tmp_path / "store"),
           "RECSYS_SERVE_LOG_DIR": str(tmp_path / "logs")}
    log = tmp_path / "server.log"
    with LocalServer(run, env=env, args=["--materialize"], log_file=log) as server:
        ready = httpx.get(server.url + "/readyz", timeout=30).json()
    assert ready["status"] == "ok", ready
    assert "materialising online features for tiktok-meanpool-materialize" in " ".join(log.read_text().split())
    info = store.version_info()
    assert info["dataset"] == "tiktok" and info["history_cap"] == "30" and info["dataset_version"] == meta["data_version"]

    from commands.serve import materialize_for

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        materialize_for(run)
    finally:
        get_settings.cache_clear()
    assert "already serves tiktok-meanpool-materialize: nothing to materialise" in " ".join(capsys.readouterr().out.split())
    assert store.version_info()["created_at"] == info["created_at"] and store.active_version() is not None


def test_serve_refuses_an_unreachable_redis_cluster_in_one_line(tmp_path):
    """A cluster client needs a node to learn the slot map from: nobody answering is one CLI line, exit 2."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RECSYS_REDIS_CLUSTER": "true", "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "RECSYS_STORE_DIR": str(tmp_path / "store")}
    run = tiktok_mean_pool_run(tmp_path / "run", model_version="tiktok-meanpool-cluster-check")
    done = subprocess.run([sys.executable, "-m", "commands.main", "serve", "--run", str(run), "--port", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"Redis Cluster at redis://127.0.0.1:{port}/0 is unreachable" in done.stderr
