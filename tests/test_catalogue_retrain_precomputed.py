"""A dataset of precomputed features (a real TikTok slice): items added in bulk with `recsys items add`
(their image/audio vectors) and an item taken down are in the next training run: the added items'
rows hold exactly the vectors they were added with, the run's vectors for them are what its server
computes, and the taken-down item stays in the tables but is never a candidate."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from support.local_server import REPO
from training_slices import write_test_config, write_tiktok_slice

pytestmark = pytest.mark.slow
OVERRIDES = ["model.item_knn=0", "model.propagation_layers=0", "train.epochs=2"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    from recsys.config import get_settings

    monkeypatch.setenv("RECSYS_STORE_DIR", str(tmp_path / "store"))
    get_settings.cache_clear()
    yield tmp_path / "store"
    get_settings.cache_clear()


def test_bulk_added_vectors_and_a_take_down_reach_the_next_run(tmp_path, store):
    from feature_store.catalogue_log import CatalogueLog
    from recsys.data.registry import load_dataset
    from serving.catalogue_sync import item_vector, op_features
    from serving.retriever import Retriever
    from training.config import load_config
    from training.run import train

    folder = write_tiktok_slice(tmp_path / "slice")
    config = write_test_config(tmp_path / "test.toml")
    run_a = train(load_config(config, str(folder), OVERRIDES), tmp_path / "run-a", resume=False, progress=False).run_dir
    full = load_dataset("tiktok")
    new = tmp_path / "new-items"
    new.mkdir()
    with open(new / "items.csv", "w", newline="") as f:
        csv.writer(f).writerows([["item_id", "title"], ["bulk-1", "first"], ["bulk-2", "second"]])
    given = {m: np.asarray(full.item_features[m][[11, 22]], np.float32) for m in ("image", "audio")}
    given["audio"][1] = 0.0  # bulk-2 comes with an image only
    for medium, matrix in given.items():
        np.save(new / f"{medium}_feat.npy", matrix)
    added = subprocess.run([sys.executable, "-m", "commands.main", "items", "add", "--run", str(run_a), "--from",
                            str(new), "--report", str(tmp_path / "failures.csv"), "--no-progress"], cwd=REPO,
                           env={**os.environ, "RECSYS_STORE_DIR": str(store)}, capture_output=True, text=True,
                           timeout=600)
    assert added.returncode == 0 and "2 added" in added.stderr, added.stderr
    catalogue = CatalogueLog.open(store, "slice")
    catalogue.refresh()
    catalogue.append({"op": "delete", "item_id": "3", "ts": 0.0})  # what DELETE /v1/items/3 appends

    result = train(load_config(config, str(folder), OVERRIDES), tmp_path / "run-b", resume=False, progress=False)
    ds = load_dataset(str(folder))
    record = result.metrics  # the run's data description says what training saw
    assert record["data"]["n_items"] == ds.n_items + 2
    retriever = Retriever.load(result.run_dir)
    run = retriever.run
    assert run.meta["catalogue_log"]["added"] == 2 and run.meta["catalogue_log"]["removed"] == ["3"]
    assert "2 live items folded in" in run.meta["catalogue_log"]["summary"]
    assert retriever.live.snapshot.count == 0  # nothing replayed: the run holds them
    for j, item_id in enumerate(("bulk-1", "bulk-2")):
        index = retriever.lookup(item_id)
        assert index is not None and index < retriever.n_items
        assert retriever.item_media[index] == (["audio", "image"] if j == 0 else ["image"])
        op = catalogue.current()[item_id]
        served = item_vector(retriever, op_features(retriever, op, catalogue))
        np.testing.assert_allclose(run.item_vectors[index], served, atol=1e-4)
    assert retriever.lookup("3") is None
    assert "3" in run.items["item_id"].to_list()  # kept: users' histories still hold it

    from training.data import build_training_data

    data = build_training_data(load_config(config, str(folder), OVERRIDES).data)
    rows = data.dataset.items.filter(data.dataset.items["item_id"].is_in(["bulk-1", "bulk-2"]))["item_index"].to_list()
    for medium in ("image", "audio"):
        np.testing.assert_allclose(data.content.features[medium][rows[0]], given[medium][0], atol=1e-6)
    assert data.content.masks["audio"][rows].tolist() == [True, False]
    assert data.not_candidates.sum() == 1 and data.not_candidates[ds.item_ids.index("3")]
    assert data.data_version == ds.version  # the interactions (what the online store holds) did not change


def test_checkpoints_of_a_smaller_catalogue_are_not_resumed_silently(tmp_path, store):
    """A run killed before items were added cannot resume into the grown catalogue (its tables no
    longer fit): ValueError naming --restart, never a traceback from deep inside torch."""
    from feature_store.catalogue_log import CatalogueLog
    from training.config import load_config
    from training.run import train

    folder = write_tiktok_slice(tmp_path / "slice")
    config = load_config(write_test_config(tmp_path / "test.toml"), str(folder), [*OVERRIDES[:2], "train.epochs=1"])
    train(config, tmp_path / "run", resume=False, progress=False)
    CatalogueLog.open(store, "slice").append({"op": "put", "item_id": "late", "ts": 1.0, "media": ["image"],
                                              "features": {"image": {"precomputed-d128": [0.1] * 128}}})
    with pytest.raises(ValueError, match="--restart"):
        train(config, tmp_path / "run", resume=True, progress=False)
    assert train(config, tmp_path / "run", resume=False, progress=False).metrics["data"]["n_items"] > 0
