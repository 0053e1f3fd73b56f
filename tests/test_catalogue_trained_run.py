"""A run from `recsys train` carries its item tower's content path: a server embeds a new item
from its media vectors alone (no training data) exactly as the tower embeds an item nobody
interacted with, for a single tower with the popularity prior and for an ensemble.

Trained on a small real TikTok slice with `training_slices.TEST_CONFIG` (dim 16, 3 epochs).
"""
from __future__ import annotations

import numpy as np
import pytest

from recsys.artifact import load_run
from recsys.data.registry import load_dataset
from recsys.models.content_projection import load_content_path
from training.config import load_config
from training.run import train
from training_slices import write_test_config, write_tiktok_slice

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["single", "ensemble"])
def trained(request, tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp(f"trained-{request.param}")
    folder = write_tiktok_slice(root / "slice")
    config = write_test_config(root / "test.toml")
    overrides = ["model.popularity_prior=true"] + (["train.ensemble=2"] if request.param == "ensemble" else [])
    result = train(load_config(config, str(folder), overrides), root / "run", resume=False, progress=False)
    return result.run_dir, folder


def test_content_path_reproduces_the_towers_never_interacted_items(trained):
    run_dir, folder = trained
    run, path = load_run(run_dir), load_content_path(run_dir)
    ds = load_dataset(str(folder))
    seen = np.zeros(ds.n_items, bool)
    seen[ds.split("train")["item_index"].to_numpy()] = True
    cold = np.flatnonzero(~seen)
    assert len(cold) > 20
    row_of = dict(zip(run.items["item_index"].to_list(), range(run.items.height)))
    features = {m: np.asarray(ds.item_features[m], np.float32)[cold] for m in ("image", "audio")}
    present = {m: np.asarray(ds.feature_mask[m], bool)[cold] for m in features}
    embedded = path.embed_items(features, present)
    stored = run.item_vectors[[row_of[i] for i in cold]]
    assert embedded.shape == stored.shape
    assert all(t.new_item_coordinate is not None and t.fusion is not None for t in path.towers)
    cosine = np.sum(embedded * stored, axis=1)
    # what differs is only the tower's content-kNN smoothing of the stored vectors
    assert np.median(cosine) > 0.95, np.percentile(cosine, [5, 50, 95])
