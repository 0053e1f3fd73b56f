"""`cold_item_split`: the item hold-out split behind the ML-100K cold-start figure.

Properties on synthetic interactions, then end to end on a tiny TikTok-layout dataset: the split
goes through `apply_split("predefined")` and `build_training_data`, held-out items get no ID row,
and a short training run is judged by the `recsys evaluate --task cold-start` harness.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.splits import apply_split, cold_item_split, leave_last_out
from training.config import TrainConfig
from training.data import build_training_data
from training.evaluation import evaluate_run
from training.run import train


def interactions(n_users: int = 60, n_items: int = 50, per_user: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(u, int(i), t) for u in range(n_users)
            for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False))]
    frame = pl.DataFrame(rows, schema={"user_index": pl.Int32, "item_index": pl.Int32, "timestamp": pl.Int64}, orient="row")
    return frame.with_columns(pl.col("user_index").cast(pl.String).alias("user_id"),
                              pl.col("item_index").cast(pl.String).alias("item_id"))


def cold_set(split: pl.DataFrame) -> set[int]:
    return set(split.filter(pl.col("cold_item"))["item_index"].to_list())


def test_no_held_out_item_is_in_train():
    out = cold_item_split(interactions(), fraction=0.1, seed=0)
    cold = cold_set(out)
    assert len(cold) == 5  # 10% of 50 items
    train_items = set(out.filter(pl.col("split") == "train")["item_index"].to_list())
    assert not cold & train_items
    held = out.filter(pl.col("item_index").is_in(list(cold)))
    assert held["split"].unique().to_list() == ["test"] and held["cold_item"].all()
    assert out.height == interactions().height  # nothing dropped, nothing duplicated


def test_warm_items_get_leave_last_out_over_warm_events_only():
    raw = interactions()
    out = cold_item_split(raw, fraction=0.1, seed=0)
    warm = out.filter(~pl.col("cold_item"))
    expected = leave_last_out(raw.filter(~pl.col("item_index").is_in(list(cold_set(out)))))
    key = ["user_index", "item_index"]
    assert warm.sort(key).select(*key, "split").equals(expected.sort(key).select(*key, "split"))
    per_user = warm.group_by("user_index").agg((pl.col("split") == "test").sum().alias("t"), (pl.col("split") == "valid").sum().alias("v"))
    assert (per_user["t"] == 1).all() and (per_user["v"] == 1).all()


def test_existing_split_column_is_kept_for_warm_items():
    raw = interactions().with_columns(pl.lit("train").alias("split"))
    out = cold_item_split(raw, fraction=0.2, seed=1)
    assert out.filter(~pl.col("cold_item"))["split"].unique().to_list() == ["train"]
    assert out.filter(pl.col("cold_item"))["split"].unique().to_list() == ["test"]


def test_seeded_and_valid_share_splits_cold_items_disjointly():
    raw = interactions()
    assert cold_set(cold_item_split(raw, seed=3)) == cold_set(cold_item_split(raw, seed=3))
    assert cold_set(cold_item_split(raw, fraction=0.2, seed=3)) != cold_set(cold_item_split(raw, fraction=0.2, seed=4))
    out = cold_item_split(raw, fraction=0.2, seed=3, valid_share=0.5)
    held = out.filter(pl.col("cold_item"))
    valid_items = set(held.filter(pl.col("split") == "valid")["item_index"].to_list())
    test_items = set(held.filter(pl.col("split") == "test")["item_index"].to_list())
    assert len(valid_items) == len(test_items) == 5 and not valid_items & test_items
    assert not (valid_items | test_items) & set(out.filter(pl.col("split") == "train")["item_index"].to_list())


def test_bad_fractions_are_refused():
    with pytest.raises(AssertionError):
        cold_item_split(interactions(), fraction=0.0)
    with pytest.raises(AssertionError):
        cold_item_split(interactions(), fraction=0.001)  # rounds to no cold item


# --- end to end on a tiny dataset -----------------------------------------------------------------
N_USERS, N_ITEMS = 40, 60


def write_tiny(folder: Path) -> Path:
    """TikTok layout: two user groups with their own item halves; content separates the halves."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        half = np.arange(30) if u < 20 else np.arange(30, 60)
        rows += [(u, int(i), "train") for i in rng.choice(half, size=10, replace=False)]
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema={"user_id": pl.Int32, "item_id": pl.Int32, "split": pl.String}, orient="row") \
        .write_parquet(folder / "interactions.parquet")
    group = (np.arange(N_ITEMS) >= 30).astype(np.float32)[:, None]
    np.save(folder / "image_feat.npy", (np.hstack([group, 1 - group]) * 2 + 0.3 * rng.normal(size=(N_ITEMS, 2))).astype(np.float32))
    np.save(folder / "audio_feat.npy", rng.normal(size=(N_ITEMS, 3)).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cold_split")
    ds = load_dataset(write_tiny(root / "tinycold"))
    ds = replace(ds, interactions=cold_item_split(ds.interactions.drop("split"), fraction=0.1, seed=0))
    config = TrainConfig.model_validate({
        "data": {"dataset": "tinycold", "split": "predefined"},
        "model": {"dim": 8, "item_knn": 3, "content_mode": "fallback", "id_dropout": 0.3},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.02, "threads": 1}})
    data = build_training_data(config.data, dataset=ds)
    result = train(config, root / "run", progress=False, data=data)
    return {"ds": ds, "data": data, "run": result.run_dir}


def test_predefined_keeps_the_column_and_held_out_items_have_no_id(tiny_run):
    ds, data = tiny_run["ds"], tiny_run["data"]
    cold = sorted(cold_set(ds.interactions))
    assert len(cold) == 6
    assert apply_split(ds, "predefined").interactions.equals(ds.interactions)
    no_id = np.flatnonzero(~data.catalog.has_id.numpy()).tolist()
    in_train = set(ds.interactions.filter(pl.col("split") == "train")["item_index"].to_list())
    assert set(cold) <= set(no_id) and set(no_id) == set(range(N_ITEMS)) - in_train
    # (a warm item may also end up without an ID row if leave-last-out put all its events in valid/test)
    assert data.describe()["cold_items"] == len(no_id)


def test_cold_start_harness_scores_the_held_out_items(tiny_run):
    ds = tiny_run["ds"]
    report = evaluate_run(tiny_run["run"], "test", "cold-start", dataset=ds)
    no_id = int((~tiny_run["data"].catalog.has_id).sum())
    held = ds.interactions.filter(pl.col("split") == "test", pl.col("cold_item"))
    assert report["n_cold_items"] == no_id and report["n_interactions"] >= held.height
    assert 0.0 <= report["recall@20"] <= 1.0 and report["random_recall@20"] == pytest.approx(1.0)  # < 20 candidates
    assert report["all_items"]["random_recall@20"] < 1.0
