"""The content path a run carries (`content_projection.pt`) is validated when the run is loaded,
and loaded paths are held in a bounded cache.

Before: a corrupt `content_projection.pt` passed `recsys serve`'s start-up check and
`POST /admin/model`, and then every `/v1/search` answered 500; and every model switch added a
projection to a module-level dict that never shrank.
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from recsys.artifact import RunDirError
from recsys.models import content_projection
from recsys.models.content_projection import CACHE_SIZE, PROJECTION_FILE, load_content_path, project_content
from serving.retriever import Retriever
from support.catalogue_runs import _random_path
from support.local_server import LocalServer, redis_url_of
from support.sample_runs import movielens_text_run

TEXT_DIM = 384  # MiniLM, what movielens_text_run records


def _with_path(run_dir, seed: int = 0):
    torch.save(_random_path({"text": TEXT_DIM}, 384, seed), run_dir / PROJECTION_FILE)
    return run_dir


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return _with_path(movielens_text_run(tmp_path_factory.mktemp("cp") / "good", embed=False))


@pytest.fixture(scope="module")
def corrupt_runs(tmp_path_factory, good_run):
    """The same run with a truncated file, a foreign pickle-free payload, and NaN weights."""
    import shutil

    root = tmp_path_factory.mktemp("cp-bad")
    runs = {}
    for case in ("truncated", "wrong_keys", "nan_weights"):
        run = root / case
        shutil.copytree(good_run, run)
        target = run / PROJECTION_FILE
        if case == "truncated":
            target.write_bytes(target.read_bytes()[:500])
        elif case == "wrong_keys":
            torch.save({"dim": 8}, target)
        else:
            payload = torch.load(target, weights_only=True)
            payload["media"]["text"]["state"]["net.weight"][0, 0] = float("nan")
            torch.save(payload, target)
        runs[case] = run
    return runs


@pytest.mark.parametrize("case", ["truncated", "wrong_keys", "nan_weights"])
def test_a_corrupt_content_projection_fails_the_load_naming_the_file(corrupt_runs, case):
    with pytest.raises(RunDirError, match=PROJECTION_FILE):
        Retriever.load(corrupt_runs[case])


@pytest.mark.slow
def test_a_corrupt_content_projection_is_refused_by_the_admin_switch_and_search_never_500s(
        good_run, corrupt_runs, tmp_path, redis_server):
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-content-path",
           "RECSYS_STORE_DIR": str(tmp_path / "store"), "RECSYS_SERVE_LOG_DIR": str(tmp_path / "logs"),
           "HF_HUB_OFFLINE": "1",
           # the corrupt runs live in another folder than the good one: allow both (admin switches are
           # confined to RECSYS_SERVE_RUNS_ROOT), so the refusal under test is the projection's
           "RECSYS_SERVE_RUNS_ROOT": str(Path(os.path.commonpath([str(good_run), *map(str, corrupt_runs.values())])))}
    with LocalServer(good_run, env=env, log_file=tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for run in corrupt_runs.values():
                switched = http.post("/admin/model", json={"run_dir": str(run)})
                assert switched.status_code == 422, switched.text
                assert PROJECTION_FILE in switched.json()["message"]
            search = http.post("/v1/search", json={"text": "a comedy about a dog", "k": 5})
            assert search.status_code == 200, search.text
            assert len(search.json()["items"]) == 5


def test_loaded_content_paths_stay_bounded_across_many_runs(good_run, tmp_path):
    import shutil

    query = np.random.default_rng(0).standard_normal((1, TEXT_DIM)).astype(np.float32)
    from recsys.artifact import load_run

    for i in range(2 * CACHE_SIZE + 1):
        run_dir = tmp_path / f"v{i}"
        shutil.copytree(good_run, run_dir)
        _with_path(run_dir, seed=i)
        projected = project_content(load_run(run_dir), "text", query)
        assert projected.shape == (1, 384) and np.isclose(np.linalg.norm(projected), 1.0)
        assert content_projection.cached_paths() <= CACHE_SIZE
    assert load_content_path(good_run) is not None  # an evicted path is simply read again
