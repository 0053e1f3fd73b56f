"""Media filters through the API on a mixed-media catalogue served by an approximate (HNSW) index:
a filtered list never contains other media and still has k items. (The TikTok items all carry
both image and audio, so a synthetic catalogue with 1-3 media per item is used here.)"""
from __future__ import annotations

import httpx
import pytest

from support.local_server import LocalServer, redis_url_of
from support.sample_runs import synthetic_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-media")
    run = synthetic_run(root / "run", n_items=10_000, dim=64, n_users=100, seed=7)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-serving-media",
           "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "RECSYS_SERVE_INDEX_KIND": "hnsw",
           "RECSYS_SERVE_HNSW_M": "16", "RECSYS_SERVE_HNSW_EF_CONSTRUCTION": "40"}
    with LocalServer(run, env=env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/readyz").json()["models"][0]["index_kind"] == "hnsw"
            yield http


@pytest.mark.parametrize("media", ["text", "image", "audio", "image,audio", "text,audio"])
@pytest.mark.parametrize("user", ["u1", "u2", "someone-new"])
def test_media_filter_returns_k_items_of_those_media_only(client, media, user):
    body = client.get(f"/v1/users/{user}/recommendations", params={"k": 50, "media": media}).json()
    wanted = set(media.split(","))
    assert len(body["items"]) == 50
    assert all(wanted & set(item["media"]) for item in body["items"]), body["items"]


def test_unfiltered_feed_mixes_media(client):
    seen = set()
    for user in ("u3", "u4", "u5"):
        for item in client.get(f"/v1/users/{user}/recommendations", params={"k": 50}).json()["items"]:
            seen.add(tuple(item["media"]))
    assert len(seen) >= 3


def test_similar_items_across_and_within_media(client):
    text_only = client.get("/v1/items/0/similar", params={"k": 30, "media": "text"}).json()["items"]
    assert len(text_only) == 30 and all("text" in i["media"] for i in text_only)
    any_media = client.get("/v1/items/0/similar", params={"k": 30}).json()["items"]
    assert len({tuple(i["media"]) for i in any_media}) >= 2
