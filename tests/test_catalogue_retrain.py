"""Add -> train -> serve: items added and taken down through the API are in the next training run.

On the example catalogue (real photos, texts, WAV clips; `recsys init --example`): a trained run
is served (real uvicorn, real Redis), an item with a real photo and text is PUT, a dataset item
and a live-only item are DELETEd; `recsys train` on the same dataset folds the log in. The new
run's catalogue holds the added item with the vector its own server computes from the item's
media (no replay needed: the run records the log prefix it was trained with), and never serves
the taken-down items; `recsys evaluate` reports what training reported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from fixtures_media.media import image_bytes
from support.local_server import REPO, LocalServer, redis_url_of

pytestmark = pytest.mark.slow

AUTH = {"X-API-Key": "retrain-key-0123456789abcdef"}
CONFIG = """
[data]
split = "leave-last-out"

[model]
dim = 16
item_knn = 0
propagation_layers = 0
content_mode = "fallback"
history_embedding = false

[train]
epochs = 2
batch_size = 128
lr = 0.01
patience = 5
threads = 1
seed = 0
"""
COFFEE_TEXT = "A cup of hot coffee with latte art, served on a saucer in a small cafe."


def _train(folder, config, out, env) -> str:
    done = subprocess.run([sys.executable, "-m", "commands.main", "train", "--dataset", str(folder), "--config",
                           str(config), "--out", str(out), "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def loop(tmp_path_factory, redis_server):
    from recsys.data.example import write_example_catalogue

    root = tmp_path_factory.mktemp("retrain")
    folder = write_example_catalogue(root / "shop")
    config = root / "tiny.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "RECSYS_STORE_DIR": str(root / "store"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "COLUMNS": "400"}
    first = _train(folder, config, root / "run-a", env)
    assert "catalogue log" not in first  # nothing was ever added: nothing to say
    serve_env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-retrain",
                 "RECSYS_STORE_DIR": env["RECSYS_STORE_DIR"], "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
                 "RECSYS_SERVE_API_KEY": AUTH["X-API-Key"], "HF_HUB_OFFLINE": "1"}
    with LocalServer(root / "run-a", env=serve_env, log_file=root / "server-a.log") as server:
        with httpx.Client(base_url=server.url, timeout=180) as http:
            put = http.put("/v1/items/live-coffee", headers=AUTH, data={"metadata": '{"title": "Latte art"}'},
                           files={"image": ("coffee.jpg", image_bytes("coffee", "JPEG"), "image/jpeg"),
                                  "text": ("coffee.txt", COFFEE_TEXT.encode(), "text/plain")})
            assert put.status_code == 201, put.text
            gone = http.put("/v1/items/live-gone", headers=AUTH, files={"text": ("g.txt", b"Short-lived item.",
                                                                                  "text/plain")})
            assert gone.status_code == 201, gone.text
            for item_id in ("clock", "live-gone"):
                assert http.delete(f"/v1/items/{item_id}", headers=AUTH).status_code == 200
    second = _train(folder, config, root / "run-b", env)
    return {"root": root, "folder": folder, "env": env, "serve_env": serve_env, "train_output": second,
            "run_b": root / "run-b", "store": root / "store"}


def test_train_says_what_it_folded_in_and_from_which_log(loop):
    line = next(x for x in loop["train_output"].splitlines() if "catalogue log" in x)
    assert "ops.jsonl (4 operations)" in line and "1 live items folded in" in line, line
    assert "1 taken down" in line and "kept in histories" in line, line


def test_the_new_run_holds_the_added_item_with_the_vector_its_server_computes(loop, monkeypatch):
    from recsys.config import get_settings
    from serving.catalogue_sync import item_vector, op_features
    from serving.retriever import Retriever

    monkeypatch.setenv("RECSYS_STORE_DIR", str(loop["store"]))
    get_settings.cache_clear()
    try:
        retriever = Retriever.load(loop["run_b"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    run = retriever.run
    ids = run.items["item_id"].to_list()
    assert "live-coffee" in ids and "live-gone" not in ids
    assert run.meta["catalogue_log"]["ops"] == 4 and run.meta["catalogue_log"]["removed"] == ["clock"]
    # the run was trained with the whole log: loading it replays (re-embeds) nothing
    assert retriever.live.snapshot.count == 0 and retriever.live.snapshot.generation == 4
    index = retriever.lookup("live-coffee")
    assert index is not None and index < retriever.n_items
    assert sorted(retriever.item_media[index]) == ["image", "text"] and retriever.item_titles[index] == "Latte art"
    op = retriever.catalogue_log.current()["live-coffee"]
    served = item_vector(retriever, op_features(retriever, op, retriever.catalogue_log))
    stored = run.item_vectors[index]
    np.testing.assert_allclose(stored, served, atol=1e-4)
    assert retriever.lookup("clock") is None  # taken down: in the run's tables (histories), never a candidate
    assert run.items.filter(run.items["item_id"] == "clock")["taken_down"].item() is True


def test_recsys_evaluate_reports_what_training_reported(loop, monkeypatch):
    from recsys.config import get_settings
    from training.evaluation import evaluate_run

    metrics = json.loads((loop["run_b"] / "metrics.json").read_text())
    monkeypatch.setenv("RECSYS_STORE_DIR", str(loop["store"]))
    get_settings.cache_clear()
    try:
        report = evaluate_run(loop["run_b"], "test")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert report["recall@20"] == pytest.approx(metrics["test"]["recall@20"], abs=1e-6)
    assert report["ndcg@20"] == pytest.approx(metrics["test"]["ndcg@20"], abs=1e-6)


def test_serving_the_new_run_returns_the_added_item_and_never_the_taken_down_ones(loop):
    log_file = loop["root"] / "server-b.log"
    with LocalServer(loop["run_b"], env={**loop["serve_env"], "RECSYS_REDIS_NAMESPACE": "test-retrain-b"},
                     log_file=log_file) as server:
        with httpx.Client(base_url=server.url, timeout=180) as http:
            similar = http.get("/v1/items/live-coffee/similar", params={"k": 10})
            assert similar.status_code == 200, similar.text
            assert similar.json()["items"]
            assert "clock" not in {i["item_id"] for i in similar.json()["items"]}
            found = http.post("/v1/search", json={"text": "coffee with latte art in a cafe", "k": 40})
            assert found.status_code == 200, found.text
            ids = [i["item_id"] for i in found.json()["items"]]
            # k exceeds the catalogue: every candidate comes back, the added one included, no taken-down one
            assert len(ids) == 30 and "live-coffee" in ids, ids
            assert "clock" not in ids and "live-gone" not in ids
            for item_id in ("clock", "live-gone"):
                assert http.get(f"/v1/items/{item_id}/similar").status_code == 404
    text = log_file.read_text()
    assert "4 folded in by training, 0 replayed" in text, text[-4000:]


def test_media_logged_by_another_encoder_version_are_encoded_from_the_logs_files(loop, monkeypatch):
    """The fold re-encodes the log's raw files (through the embed step) when the server logged
    outputs of another encoder version; the same encoder gives the vectors the server logged."""
    import dataclasses

    from recsys.config import get_settings
    from recsys.data.registry import load_dataset
    from training.catalogue_fold import fold_content, fold_log
    from training.content import load_item_content

    monkeypatch.setenv("RECSYS_STORE_DIR", str(loop["store"]))
    get_settings.cache_clear()
    try:
        base = load_dataset(str(loop["folder"]))
        folded, fold = fold_log(base, loop["store"])
        content = load_item_content(base, None)
        renamed = dataclasses.replace(content, encoders={m: {**e, "version": f"{e['version']}-other"}
                                                         for m, e in content.encoders.items()})
        reused, first = fold_content(content, folded, fold, loop["store"])
        encoded, second = fold_content(renamed, folded, fold, loop["store"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert first.reused == {"image": 1, "text": 1} and not first.encoded
    assert second.encoded == {"image": 1, "text": 1} and not second.reused and not second.failures
    row = folded.item_ids.index("live-coffee")
    for medium in ("image", "text"):
        np.testing.assert_allclose(encoded.features[medium][row], reused.features[medium][row], atol=1e-4)
    assert not reused.masks["audio"][row]
