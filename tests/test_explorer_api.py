"""The explorer's JSON endpoints on a small catalogue with real media files: history (offline +
live events from a real Redis), catalogue lookups with file URLs, and the media endpoint that
streams an item's image / audio file (404 JSON when there is none).

The catalogue is a tabular dataset folder (items.parquet names image_uri / audio_uri, relative,
absolute and file:// URIs, one pointing at a deleted file); the run directory over it names the
folder as its dataset, so the server finds the files the way it would for any real run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from fixtures_media.media import write_audio, write_images

from feature_store.materialize import materialize
from recsys.artifact import MeanPoolUserEncoder, l2_normalise, load_run, save_run
from recsys.config import Settings
from recsys.data import load_dataset
from serving.api.routes import explorer
from serving.api.routes.explorer import MediaFiles
from serving.config import ServingSettings
from support.local_server import redis_url_of
from serving.main import create_app
from serving.retriever import Retriever

NAMESPACE = "test-explorer-api"


def write_media_catalogue(root: Path) -> Path:
    """A dataset folder with real photos and audio clips; returns the folder.

    Items: astro (image + audio, relative URIs), coffee (image only), cat (file:// image, ogg),
    tone (audio only), camera (absolute image path), gone (image file deleted), note (text only).
    Users: u1 watched astro, coffee, cat; u2 tone, camera; u3 note.
    """
    images, audio = write_images(root / "media"), write_audio(root / "media")
    rows = [
        ("astro", "Astronaut portrait", "A portrait of an astronaut", "media/astronaut.png", "media/tone_a440.wav"),
        ("coffee", "Coffee cup", "A cup of coffee on a saucer", "media/coffee.jpg", None),
        ("cat", "Chelsea the cat", "A tabby cat looking at the camera", images["chelsea"].as_uri(), "media/chirp.ogg"),
        ("tone", "Low tone", None, None, str(audio["tone_low"])),
        ("camera", "Cameraman", "A black and white photo", str(images["camera"]), None),
        ("gone", "Deleted photo", "Its file was removed", "media/nope.png", None),
        ("note", "A note", "An item with text only", None, None),
    ]
    pl.DataFrame(rows, schema=["item_id", "title", "text", "image_uri", "audio_uri"], orient="row").write_parquet(
        root / "items.parquet")
    pl.DataFrame({"user_id": ["u1", "u1", "u1", "u2", "u2", "u3"],
                  "item_id": ["astro", "coffee", "cat", "tone", "camera", "note"],
                  "timestamp": [1, 2, 3, 4, 5, 6]}).write_parquet(root / "interactions.parquet")
    return root


def media_catalogue_run(folder: Path, out: Path, dim: int = 16) -> Path:
    """A mean-pool run over the catalogue (random unit item vectors: a fixture, not a model)."""
    ds = load_dataset(folder)
    item_vectors = l2_normalise(np.random.default_rng(0).standard_normal((ds.n_items, dim)).astype(np.float32))
    histories = (ds.interactions.sort("timestamp").group_by("user_id", maintain_order=True)
                 .agg(pl.col("item_index")).sort("user_id"))
    users = histories.select("user_id").with_row_index("user_index").with_columns(
        pl.col("user_index").cast(pl.Int32), n_train=histories["item_index"].list.len().cast(pl.Int32))
    payload = {"kind": MeanPoolUserEncoder.kind, "kwargs": {"half_life": 20.0}}
    user_vectors = MeanPoolUserEncoder(item_vectors, half_life=20.0).encode(
        [list(h) for h in histories["item_index"].to_list()])
    popularity = np.bincount(ds.interactions["item_index"].to_numpy(), minlength=ds.n_items)
    items = ds.items.select("item_id", "item_index", "media", "title").with_columns(pl.Series("popularity", popularity))
    return save_run(out, model_version="media-fixture-1", dataset=str(folder), data_version=ds.version,
                    config={"model": {"kind": "mean_pool", "note": "fixture: random item vectors"}}, items=items,
                    users=users, item_vectors=item_vectors, user_vectors=user_vectors, user_encoder_payload=payload)


def explorer_app(settings: ServingSettings, shared: Settings | None = None):
    """The feed API with the explorer router (included here until serving.main includes it)."""
    app = create_app(settings, shared)
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.include_router(explorer.router)
    return app


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    return write_media_catalogue(tmp_path_factory.mktemp("explorer-media") / "catalogue")


@pytest.fixture(scope="module")
def client(catalogue, tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("explorer-api")
    run = media_catalogue_run(catalogue, root / "run")
    materialize(load_dataset(catalogue), client=redis_server, namespace=NAMESPACE, offline_root=root / "offline",
                progress=False)
    app = explorer_app(ServingSettings(run_dir=run, log_dir=root / "logs"),
                       Settings(redis_url=redis_url_of(redis_server), redis_namespace=NAMESPACE))
    with TestClient(app) as http:
        yield http


def test_history_is_the_online_history_newest_first_with_media_and_titles(client):
    body = client.get("/v1/users/u1/history").json()
    assert [i["item_id"] for i in body["items"]] == ["cat", "coffee", "astro"]
    assert body["total"] == 3 and body["model_version"] == "media-fixture-1" and body["variant"] == "A"
    assert body["items"][0]["title"] == "Chelsea the cat" and body["items"][0]["media"] == ["text", "image", "audio"]
    assert [i["ts"] for i in body["items"]] == [3, 2, 1]
    assert client.get("/v1/users/u1/history", params={"n": 1}).json()["items"][0]["item_id"] == "cat"
    unknown = client.get("/v1/users/somebody-new/history").json()
    assert unknown["items"] == [] and unknown["total"] == 0


def test_a_posted_event_heads_the_history_at_once(client):
    response = client.post("/v1/events", json={"event_id": "explorer-api-1", "user_id": "u3", "item_id": "astro",
                                               "event_type": "click"})
    assert response.status_code == 202, response.text
    items = client.get("/v1/users/u3/history").json()["items"]
    assert [i["item_id"] for i in items] == ["astro", "note"]
    assert items[0]["files"] == {"image": "/v1/items/astro/media/image", "audio": "/v1/items/astro/media/audio"}


@pytest.mark.parametrize(("item", "medium", "file", "content_type"), [
    ("astro", "image", "media/astronaut.png", "image/png"),
    ("astro", "audio", "media/tone_a440.wav", "audio/"),
    ("coffee", "image", "media/coffee.jpg", "image/jpeg"),
    ("cat", "image", "media/chelsea.png", "image/png"),       # a file:// URI
    ("cat", "audio", "media/chirp.ogg", "audio/ogg"),
    ("camera", "image", "media/camera.png", "image/png"),     # an absolute path
    ("tone", "audio", "media/tone_low.flac", "audio/"),
])
def test_media_endpoint_streams_the_items_file(client, catalogue, item, medium, file, content_type):
    response = client.get(f"/v1/items/{item}/media/{medium}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    assert response.content == (catalogue / file).read_bytes()


@pytest.mark.parametrize(("item", "medium", "code"), [
    ("coffee", "audio", "no_media_file"),
    ("note", "image", "no_media_file"),
    ("astro", "text", "no_media_file"),
    ("gone", "image", "media_file_missing"),
    ("no-such-item", "image", "unknown_item"),
])
def test_media_endpoint_answers_404_json_when_there_is_no_file(client, item, medium, code):
    response = client.get(f"/v1/items/{item}/media/{medium}")
    assert response.status_code == 404
    assert response.json()["code"] == code and item in response.json()["message"]


def test_items_lookup_gives_file_urls_only_for_files_that_exist(client):
    body = client.get("/v1/items", params={"ids": "astro,gone,note,no-such-item,astro"}).json()
    by_id = {i["item_id"]: i for i in body["items"]}
    assert [i["item_id"] for i in body["items"]] == ["astro", "gone", "note", "no-such-item"]
    assert set(by_id["astro"]["files"]) == {"image", "audio"} and by_id["astro"]["title"] == "Astronaut portrait"
    assert by_id["gone"]["files"] == {} and by_id["note"]["media"] == ["text"]
    assert by_id["no-such-item"]["known"] is False
    too_many = client.get("/v1/items", params={"ids": ",".join(str(i) for i in range(201))})
    assert too_many.status_code == 422 and too_many.json()["code"] == "invalid_request"


def test_examples_offer_known_users_and_what_the_catalogue_serves(client):
    body = client.get("/v1/explorer/examples").json()
    assert body["dataset"].endswith("catalogue") and body["model_version"] == "media-fixture-1"
    assert {u["user_id"] for u in body["users"]} == {"u1", "u2", "u3"}
    assert [u["n_train"] for u in body["users"]] == sorted((u["n_train"] for u in body["users"]), reverse=True)
    assert body["media"] == ["audio", "image", "text"]
    assert body["media_files"] == {"image": 5, "audio": 3}  # files named (gone names a deleted one)
    assert body["new_user_id"] not in {u["user_id"] for u in body["users"]}


def test_uris_in_the_run_items_win_over_the_dataset_and_remote_ones_are_urls(catalogue, tmp_path):
    run_dir = media_catalogue_run(catalogue, tmp_path / "run")
    items = pl.read_parquet(run_dir / "items.parquet").with_columns(
        image_uri=pl.Series([str(catalogue / "media/coffee.jpg"), "https://cdn.example.org/cat.jpg", "s3://bucket/x.png",
                             None, None, "media/astronaut.png", None]),
        audio_uri=pl.lit(None, dtype=pl.String))
    items.write_parquet(run_dir / "items.parquet")
    retriever = Retriever(load_run(run_dir))
    files = MediaFiles()
    index = retriever.run.item_index_by_id
    assert files.source(retriever, index["astro"], "image") == catalogue / "media/coffee.jpg"
    assert files.source(retriever, index["coffee"], "image") == "https://cdn.example.org/cat.jpg"
    assert files.source(retriever, index["cat"], "image") is None  # s3:// cannot be served from here
    assert files.source(retriever, index["gone"], "image") == catalogue / "media/astronaut.png"  # relative: dataset folder
    assert files.source(retriever, index["astro"], "audio") is None  # the run's column wins, even when empty
    assert files.urls(retriever, index["coffee"]) == {"image": "/v1/items/coffee/media/image"}
    assert files.counts(retriever) == {"image": 4, "audio": 0}
