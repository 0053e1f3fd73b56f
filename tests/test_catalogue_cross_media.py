"""Cross-media, end to end: items with real photos (scikit-image), real sounds (numpy, libsndfile
formats) and real text are added through `PUT /v1/items/{id}` on a real server with real Redis,
embedded by the default encoders (EfficientNet-Lite0, aisfx, MiniLM) through the run's content
path, and found by a text, an image and an audio query, across media (an audio query returns an
item that is also an image item). Corrupt media get a 4xx naming the medium and store nothing.
"""
from __future__ import annotations

import io
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

from fixtures_media.media import SR, chirp, image_array, image_bytes, noise, speech_wav, tone, wav_bytes
from support.catalogue_runs import movielens_content_run
from support.local_server import LocalServer, redis_url_of

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")]
SENTENCE = "Good evening. Here is the weather forecast: rain in the north, sunshine in the south."

AUTH = {"X-API-Key": "cross-media-key-0123456789"}
ITEMS = {
    "live-cat": {"image": ("chelsea.png", image_bytes("chelsea"), "image/png"),
                 "audio": ("purr.wav", wav_bytes(noise(2.0, seed=3)), "audio/wav")},
    "live-rocket": {"image": ("rocket.jpg", image_bytes("rocket", "JPEG"), "image/jpeg"),
                    "audio": ("launch.ogg", wav_bytes(chirp(6.0), fmt="OGG"), "audio/ogg")},
    "live-coffee": {"image": ("coffee.jpg", image_bytes("coffee", "JPEG"), "image/jpeg"),
                    "text": ("coffee.txt", "A cup of hot coffee with latte art, served on a saucer in a cafe.".encode(),
                             "text/plain")},
    "live-tone": {"audio": ("a440.wav", wav_bytes(tone(440, 3.0)), "audio/wav")},
    "live-forecast": {"audio": ("forecast.wav", speech_wav(SENTENCE, 160), "audio/wav"),
                      "image": ("camera.png", image_bytes("camera"), "image/png")},
    "live-astronaut": {"text": ("astronaut.txt", "An astronaut in a white space suit stands beside the flag "
                                "on a NASA mission.".encode(), "text/plain"),
                       "audio": ("low.flac", wav_bytes(tone(110, 3.0), fmt="FLAC"), "audio/flac")},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory, redis_server):
    from fixtures_media.media import shared_encoder
    from recsys.encoders import build_encoder

    root = tmp_path_factory.mktemp("cross-media")
    run = movielens_content_run(root / "run", shared_encoder("text"), build_encoder("image"), shared_encoder("audio"))
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-cross-media",
           "RECSYS_STORE_DIR": str(root / "store"), "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
           "RECSYS_SERVE_API_KEY": AUTH["X-API-Key"], "HF_HUB_OFFLINE": "1"}
    with LocalServer(run, env=env, log_file=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=180) as http:
            for item_id, files in ITEMS.items():
                response = http.put(f"/v1/items/{item_id}", files=files, headers=AUTH,
                                    data={"metadata": f'{{"title": "{item_id}"}}'})
                assert response.status_code == 201, response.text
                assert response.json()["media"] == sorted(files)
            yield http


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def test_an_image_query_finds_the_item_with_that_photo(client):
    photo = Image.fromarray(image_array("chelsea")).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    photo.resize((photo.width // 2, photo.height // 2)).save(buffer, format="JPEG", quality=80)
    ids = _ids(client.post("/v1/search", files={"image": ("q.jpg", buffer.getvalue(), "image/jpeg")}, data={"k": "5"}))
    assert ids[0] == "live-cat", ids


def test_an_audio_query_finds_an_image_item_by_its_sound(client):
    query = wav_bytes(chirp(6.0)[: 4 * SR])  # the first 4 s of the launch sound, as WAV instead of OGG
    ids = _ids(client.post("/v1/search", files={"audio": ("q.wav", query, "audio/wav")}, data={"k": "5"}))
    assert "live-rocket" in ids[:2], ids
    images = _ids(client.post("/v1/search", files={"audio": ("q.wav", query, "audio/wav")},
                              data={"k": "3", "media": "image"}))
    assert images[0] == "live-rocket", images  # the audio query's best image item is the one with that sound
    tone_ids = _ids(client.post("/v1/search", files={"audio": ("t.wav", wav_bytes(tone(440, 1.5)), "audio/wav")},
                                data={"k": "5"}))
    assert tone_ids[0] == "live-tone", tone_ids


def test_a_spoken_query_finds_the_spoken_item(client):
    query = speech_wav(SENTENCE, 120)  # the same words, spoken slower
    ids = _ids(client.post("/v1/search", files={"audio": ("q.wav", query, "audio/wav")},
                           data={"k": "3", "media": "image"}))
    assert ids[0] == "live-forecast", ids


def test_a_text_query_finds_items_across_media(client):
    ids = _ids(client.post("/v1/search", json={"text": "coffee with latte art in a cafe", "k": 10}))
    assert "live-coffee" in ids[:3], ids  # an image + text item
    ids = _ids(client.post("/v1/search", json={"text": "astronaut in a space suit", "k": 10}))
    assert "live-astronaut" in ids[:3], ids


def test_similar_of_a_live_item_and_media_filters(client):
    ids = _ids(client.get("/v1/items/live-cat/similar", params={"k": 5, "media": "image"}))
    assert set(ids) <= {"live-rocket", "live-coffee", "live-forecast"} and ids  # the image items but itself


@pytest.mark.parametrize("case", ["corrupt_image", "lying_audio_header", "image_as_audio"])
def test_corrupt_media_are_422_naming_the_medium_and_store_nothing(client, case):
    png = image_bytes("astronaut")
    files = {"corrupt_image": {"image": ("t.png", png[: len(png) // 3], "image/png")},
             "lying_audio_header": {"audio": ("g.wav", b"RIFF\x10\x00\x00\x00WAVEfmt " + np.random.default_rng(2).bytes(3000),
                                              "audio/wav")},
             "image_as_audio": {"audio": ("x.wav", png, "application/octet-stream")}}[case]
    response = client.put(f"/v1/items/bad-{case}", files=files, headers=AUTH)
    assert response.status_code in (415, 422), response.text
    medium = next(iter(files))
    assert medium in response.json()["message"]
    assert client.get(f"/v1/items/bad-{case}/similar").status_code == 404
