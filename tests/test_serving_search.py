"""Content search on a run with a text medium (ML-100K titles, MiniLM recorded as the text encoder).

The query goes through the run's recorded text encoder, then the item tower's content projection
(`recsys.models.project_content`, from the run's `content_projection.pt`). The run here is the
mean-pool fixture, which has no projection file (nothing was trained): a text query must be the
one clear 422 naming the missing projection, never a 500 and never results from an untrained path.
"""
from __future__ import annotations

import httpx
import pytest

from support.local_server import LocalServer, redis_url_of
from support.sample_runs import movielens_text_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-search")
    run = movielens_text_run(root / "run", embed=False)  # the vectors are never read on these paths
    assert not (run / "content_projection.pt").exists()
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-serving-search",
           "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "HF_HUB_OFFLINE": "1"}
    with LocalServer(run, env=env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            yield http


def test_text_search_on_a_run_without_a_projection_names_it(client):
    response = client.post("/v1/search", json={"text": "an animated film about toys", "k": 10})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "medium_not_supported" and "no content path (content_projection.pt)" in body["message"], body


def test_search_by_a_medium_the_catalogue_lacks_is_422(client):
    response = client.post("/v1/search", files={"audio": ("clip.wav", b"RIFF....WAVE", "audio/wav")})
    assert response.status_code == 422
    assert response.json()["code"] == "medium_not_supported" and "no audio items" in response.json()["message"]


def test_multipart_search_needs_exactly_one_file(client):
    response = client.post("/v1/search", data={"k": "5"}, files={"other": ("x.bin", b"123")})
    assert response.status_code == 422 and "exactly one file" in response.json()["message"]


def test_text_feed_titles_are_returned(client):
    body = client.get("/v1/users/1/recommendations", params={"k": 5}).json()
    assert len(body["items"]) == 5 and all(i["media"] == ["text"] and i["title"] for i in body["items"])
