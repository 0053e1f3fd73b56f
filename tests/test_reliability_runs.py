"""A corrupt or partial run directory is refused at load with a clear message, and nothing that is
serving goes down: `recsys serve --run BROKEN` exits with one line (no traceback) before opening a
port, and an admin switch to a broken run answers 422 while the current version keeps serving.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.local_server import REPO, LocalServer, free_port, redis_url_of
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow


def _break(good: Path, bad: Path, how: str) -> str:
    """Copy `good` to `bad` and damage it; returns the file name the error must mention."""
    if how == "missing_dir":
        return str(bad)
    shutil.copytree(good, bad)
    if how == "copy_in_progress":  # a run still being copied: no items table yet
        (bad / "items.parquet").unlink()
        return "items.parquet"
    if how == "run_json_garbage":
        (bad / "run.json").write_text('{"model_version": "x", ')
        return "run.json cannot be read"
    if how == "run_json_no_version":
        meta = json.loads((bad / "run.json").read_text())
        del meta["model_version"]
        (bad / "run.json").write_text(json.dumps(meta))
        return "run.json"
    if how == "items_garbage":
        (bad / "items.parquet").write_bytes(b"PAR1 not really parquet")
        return "items.parquet cannot be read"
    if how == "truncated_vectors":
        data = (bad / "item_vectors.npy").read_bytes()
        (bad / "item_vectors.npy").write_bytes(data[: len(data) // 3])
        return "item_vectors.npy cannot be read"
    if how in ("nan_vectors", "unnormalised_vectors"):
        vectors = np.load(bad / "item_vectors.npy")
        if how == "nan_vectors":
            vectors[5, 3] = np.nan
        else:
            vectors *= 3.0
        np.save(bad / "item_vectors.npy", vectors)
        return "NaN" if how == "nan_vectors" else "L2-normalised"
    if how == "encoder_garbage":
        (bad / "user_encoder.pt").write_bytes(b"\x00not a torch file")
        return "user_encoder.pt"
    raise ValueError(how)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return tiktok_mean_pool_run(tmp_path_factory.mktemp("reliability-runs") / "good", model_version="runs-good-1")


@pytest.mark.parametrize("how,variant", [("missing_dir", "A"), ("copy_in_progress", "A"), ("run_json_garbage", "A"),
                                         ("truncated_vectors", "A"), ("nan_vectors", "B")])
def test_serve_with_a_broken_run_exits_with_one_clear_line(good_run, tmp_path, how, variant):
    bad = tmp_path / f"bad-{how}"
    mentioned = _break(good_run, bad, how)
    runs = ["--run", str(bad)] if variant == "A" else ["--run", str(good_run), "--run-b", str(bad)]
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "commands.main", "serve", *runs, "--port", str(port)], cwd=REPO,
                          env={**os.environ, "RECSYS_SERVE_LOG_DIR": str(tmp_path / "logs")}, capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in lines if " INFO " not in line]  # loading variant A first logs as usual
    assert errors == lines[-1:] and errors[0].startswith("recsys serve: "), done.stderr[-2000:]
    assert mentioned in errors[0] and str(bad) in errors[0] and "Traceback" not in done.stderr
    with pytest.raises(httpx.ConnectError):  # it never opened the port
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


@pytest.fixture(scope="module")
def server(good_run, tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("reliability-runs-server")
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-reliability-runs",
           "RECSYS_STORE_DIR": str(root / "store"), "RECSYS_SERVE_LOG_DIR": str(root / "logs")}
    with LocalServer(good_run, env=env, log_file=root / "server.log") as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield {"client": client, "root": root}
    assert "Traceback" not in (root / "server.log").read_text()


@pytest.mark.parametrize("how", ["copy_in_progress", "run_json_garbage", "run_json_no_version", "items_garbage",
                                 "nan_vectors", "unnormalised_vectors", "encoder_garbage"])
def test_switching_to_a_broken_run_is_refused_and_the_version_serves_on(good_run, server, how):
    client = server["client"]
    bad = good_run.parent / f"bad-switch-{how}"  # under the runs root (the served run's folder)
    mentioned = _break(good_run, bad, how)
    response = client.post("/admin/model", json={"run_dir": str(bad)})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_run_dir" and mentioned in body["message"] and "still serving" in body["message"]
    assert client.get("/admin/model").json()[0]["model_version"] == "runs-good-1"
    feed = client.get("/v1/users/3/recommendations", params={"k": 5})
    assert feed.status_code == 200 and feed.json()["model_version"] == "runs-good-1"


@pytest.mark.parametrize("run_dir,code", [("x" * 300, "run_dir_not_allowed"), ("/" + "y" * 5000, "invalid_request"),
                                          ("a\x00b", "invalid_run_dir")])
def test_an_unusable_path_is_a_422_too(good_run, server, run_dir, code):
    response = server["client"].post("/admin/model", json={"run_dir": run_dir})
    assert response.status_code == 422 and response.json()["code"] == code, response.text
    too_long = server["client"].post("/admin/model", json={"run_dir": str(good_run.parent / ("z" * 300))})
    assert too_long.status_code == 422 and too_long.json()["code"] == "invalid_run_dir", too_long.text


def test_after_refusals_a_good_run_still_switches(good_run, server):
    fixed = good_run.parent / "fixed"
    shutil.copytree(good_run, fixed)
    (fixed / "run.json").write_text((good_run / "run.json").read_text().replace("runs-good-1", "runs-good-2"))
    response = server["client"].post("/admin/model", json={"run_dir": str(fixed)})
    assert response.status_code == 200 and response.json()["previous_version"] == "runs-good-1"
    assert server["client"].get("/v1/users/3/recommendations").json()["model_version"] == "runs-good-2"
