"""The explorer knows the live catalogue: an item added through `PUT /v1/items/{id}` is described
like a dataset item (media, title, metadata, a link to the photo it was added with, streamed with
its type), and an item taken down disappears from the page's lookups, histories and media links.

A real app (TestClient) over the explorer's media catalogue (real photos and sounds), with a run
whose content path embeds images with the default encoder (EfficientNet-Lite0), a real Redis.
"""
from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from feature_store.materialize import materialize
from fixtures_media.media import image_bytes
from recsys.config import Settings, get_settings
from recsys.data import load_dataset
from recsys.models.content_projection import PROJECTION_FILE
from serving.config import ServingSettings
from support.catalogue_runs import _random_path
from support.local_server import redis_url_of
from test_explorer_api import explorer_app, media_catalogue_run, write_media_catalogue

NAMESPACE = "test-explorer-live"
AUTH = {"X-API-Key": "explorer-live-key-0123456789"}


def image_content_run(folder, out):
    """The explorer's media-catalogue run with a content path that embeds images (and nothing else)
    with the default image encoder: random projections, a fixture, not a model."""
    from recsys.artifact import load_run
    from recsys.encoders import build_encoder, spec_to_dict

    run = media_catalogue_run(folder, out)
    encoder = build_encoder("image")
    torch.save(_random_path({"image": encoder.dim}, 16, 0), run / PROJECTION_FILE)
    meta = json.loads((run / "run.json").read_text())
    meta["encoders"] = {"image": {"version": encoder.version, "dim": encoder.dim, "spec": spec_to_dict(encoder.spec)}}
    (run / "run.json").write_text(json.dumps(meta))
    load_run(run)
    return run


@pytest.fixture(scope="module")
def client(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("explorer-live")
    folder = write_media_catalogue(root / "catalogue")
    run = image_content_run(folder, root / "run")
    materialize(load_dataset(folder), client=redis_server, namespace=NAMESPACE, offline_root=root / "offline",
                progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_STORE_DIR", str(root / "store"))
        get_settings.cache_clear()
        app = explorer_app(ServingSettings(run_dir=run, log_dir=root / "logs", api_key=AUTH["X-API-Key"]),
                           Settings(redis_url=redis_url_of(redis_server), redis_namespace=NAMESPACE))
        with TestClient(app) as http:
            yield http
    get_settings.cache_clear()


def _items(client, ids: str) -> dict[str, dict]:
    response = client.get("/v1/items", params={"ids": ids})
    assert response.status_code == 200, response.text
    return {i["item_id"]: i for i in response.json()["items"]}


def test_an_item_added_live_shows_like_a_dataset_item_with_its_photo(client):
    before = client.get("/v1/explorer/examples").json()["media_files"]
    photo = image_bytes("rocket", "JPEG")
    put = client.put("/v1/items/live-rocket", headers=AUTH, files={"image": ("rocket.jpg", photo, "image/jpeg")},
                     data={"metadata": json.dumps({"title": "Rocket at dawn", "source": "press kit"})})
    assert put.status_code == 201, put.text
    item = _items(client, "live-rocket,astro")["live-rocket"]
    assert item["known"] is True and item["live"] is True and item["media"] == ["image"]
    assert item["title"] == "Rocket at dawn" and item["metadata"] == {"title": "Rocket at dawn", "source": "press kit"}
    assert item["files"] == {"image": "/v1/items/live-rocket/media/image"}
    media = client.get(item["files"]["image"])
    assert media.status_code == 200 and media.content == photo
    assert media.headers["content-type"].startswith("image/jpeg")
    assert client.get("/v1/items/live-rocket/media/audio").json()["code"] == "no_media_file"
    after = client.get("/v1/explorer/examples").json()["media_files"]
    assert after == {**before, "image": before["image"] + 1}
    similar = client.get("/v1/items/live-rocket/similar", params={"k": 3})
    assert similar.status_code == 200, similar.text


def test_a_dataset_item_put_again_shows_its_new_photo(client):
    photo = image_bytes("camera", "PNG")
    assert client.put("/v1/items/coffee", headers=AUTH, files={"image": ("c.png", photo, "image/png")},
                      data={"metadata": json.dumps({"title": "Coffee, new photo"})}).status_code == 200
    item = _items(client, "coffee")["coffee"]
    assert item["live"] is True and item["title"] == "Coffee, new photo"
    assert client.get(item["files"]["image"]).content == photo


def test_taken_down_items_disappear_from_the_page(client):
    assert _items(client, "cat")["cat"]["known"] is True
    history = client.get("/v1/users/u1/history").json()["items"]
    assert {i["item_id"]: i["known"] for i in history}["cat"] is True
    for item_id in ("cat", "live-rocket"):
        assert client.delete(f"/v1/items/{item_id}", headers=AUTH).status_code == 200
    gone = _items(client, "cat,live-rocket,astro")
    assert gone["cat"] == {"item_id": "cat", "known": False, "media": [], "title": None, "files": {}, "live": False,
                           "metadata": None}
    assert gone["live-rocket"]["known"] is False and gone["astro"]["known"] is True
    for item_id, medium in (("cat", "image"), ("live-rocket", "image")):
        response = client.get(f"/v1/items/{item_id}/media/{medium}")
        assert response.status_code == 404 and response.json()["code"] == "unknown_item"
    history = client.get("/v1/users/u1/history").json()["items"]
    assert {i["item_id"]: i["known"] for i in history}["cat"] is False  # the event stays; the page shows it gone


def test_the_page_learns_which_media_it_can_search_by(client):
    info = client.get("/v1/explorer/examples").json()
    assert info["search_media"]["image"] is None
    for medium in ("text", "audio"):  # the catalogue has such items, the run no encoder for them
        assert "records no content encoder" in info["search_media"][medium]
