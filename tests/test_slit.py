"""SLIT, the closed-form next-item model (`recsys.baselines.slit`): as a baseline, and as the run's second
closed-form member (`training.closed_form`), which it joins only on a time-ordered split.

Controlled data: users walk the catalogue in order (item i is followed by i + 1), which an order-blind model
(EASE, a mean-pooled tower) cannot tell from i - 1; the real-data checks are the TikTok slice (no time order).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import load_run
from recsys.baselines import make_baseline
from recsys.baselines.slit import SLIT, recency_rows, transition_targets
from recsys.data import load_dataset
from recsys.data.splits import apply_split
from recsys.models.closed_form import item_part
from training.config import load_config
from training.data import build_training_data
from training.model_card import write_model_card
from training.run import train
from training_slices import write_test_config, write_tiktok_slice

N_ITEMS = 40


def walk_folder(root: Path, n_users: int = 150, steps: int = 10, seed: int = 0) -> Path:
    """A folder dataset (items.csv + interactions.csv, real timestamps) of users walking i, i+1, ... mod 40."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{(start + t) % N_ITEMS}", 1000 * u + t)
            for u, start in enumerate(rng.integers(0, N_ITEMS, n_users)) for t in range(steps)]
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)]}).write_csv(root / "items.csv")
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").write_csv(root / "interactions.csv")
    return root


def test_rows_weigh_each_item_by_its_age_and_targets_are_the_next_items() -> None:
    sequences = [np.array([4, 7, 9]), np.array([], np.int64), np.array([2, 2])]
    prefixes = recency_rows(sequences, 10, half_life=1.0, window=50, prefixes=True).toarray()
    assert prefixes.shape == (3, 10)  # transitions 4->7, 7->9, 2->2
    assert prefixes[0, 4] == 1.0 and prefixes[1, 7] == 1.0 and prefixes[1, 4] == 0.5 and prefixes[2, 2] == 1.0
    assert transition_targets(sequences, 10).toarray().argmax(1).tolist() == [7, 9, 2]
    users = recency_rows(sequences, 10, half_life=0.0, window=2, prefixes=False).toarray()
    assert users[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]  # the latest two, unweighted
    assert not users[1].any() and users[2, 2] == 2.0  # no history; a repeated item adds up


def test_slit_learns_the_order_ease_cannot_see(tmp_path: Path) -> None:
    ds = apply_split(load_dataset(str(walk_folder(tmp_path / "walk"))), "leave-last-out")
    train, valid = ds.split("train"), ds.split("valid")
    slit = make_baseline("slit").fit(ds, train)
    assert {(h, lam) for h, lam, _ in slit.valid_history} == {(h, lam) for h in (3.0, 10.0, 30.0)
                                                            for lam in (100.0, 300.0, 1000.0, 3000.0, 10000.0)}
    best = max(slit.valid_history, key=lambda row: row[2])
    assert (slit.half_life, slit.lam) == best[:2]
    users = valid["user_index"].to_numpy()
    seen = np.zeros((len(users), ds.n_items), bool)
    for row, user in enumerate(users):
        seen[row, train.filter(pl.col("user_index") == user)["item_index"].to_numpy()] = True
    top = np.where(seen, -np.inf, slit.score(users)).argmax(1)
    assert (top == valid["item_index"].to_numpy()).mean() > 0.95  # the next item of the walk
    ease = make_baseline("ease").fit(ds, train)
    ease_top = np.where(seen, -np.inf, ease.score(users)).argmax(1)
    assert (ease_top == valid["item_index"].to_numpy()).mean() < 0.75  # i - 1 and i + 1 look the same to it
    # test after valid reads train + valid: the walk's next step moves on by one
    slit.read_histories(pl.concat([train, valid]))
    test = ds.split("test").sort("user_index")
    assert (slit.score(test["user_index"].to_numpy()).argmax(1) == test["item_index"].to_numpy()).mean() > 0.95


def test_slit_refuses_a_catalogue_over_its_limit(tmp_path: Path) -> None:
    ds = apply_split(load_dataset(str(walk_folder(tmp_path / "walk"))), "leave-last-out")
    with pytest.raises(ValueError, match="over its 10-item limit"):
        SLIT(max_items=10).fit(ds, ds.split("train"))


def test_an_item_part_that_keeps_lengths_scores_the_inner_product_at_unit_norm() -> None:
    table = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    table[2] *= 5.0
    part = item_part(table, np.array([True, True, True, True, True, False]), keep_norms=True)
    assert np.allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-6)
    user = np.random.default_rng(4).normal(size=4).astype(np.float32)
    user_part = np.append(user, 0.0)
    longest = np.linalg.norm(table[:5], axis=1).max()
    assert np.allclose(part[:5] @ user_part, table[:5] @ user / longest, atol=1e-5)
    assert np.array_equal(part[5], [0, 0, 0, 0, 1])  # not scorable: the "never seen" coordinate


WALK_CONFIG = """
[data]
split = "leave-last-out"

[model]
dim = 16
item_knn = 0
propagation_layers = 1
user_pooling = "mean"
history_embedding = false

[loss]
kind = "softmax"
alignment_weight = 0.0

[train]
epochs = 3
batch_size = 256
lr = 0.01
patience = 10
threads = 1
seed = 0
select_metric = "ndcg@10"
"""


@pytest.fixture(scope="module")
def walk_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("slit")
    folder = walk_folder(root / "walk")
    config_path = root / "walk.toml"
    config_path.write_text(WALK_CONFIG)
    cfg = load_config(config_path, str(folder), ["ease.transition_weights=[0, 0.5, 2]"])
    return {"config": cfg, "result": train(cfg, root / "run", resume=False, progress=False), "root": root,
            "folder": folder, "config_path": config_path}


def test_the_slit_member_is_kept_where_order_matters_and_serves_as_one_two_tower(walk_run: dict) -> None:
    result, cfg = walk_run["result"], walk_run["config"]
    (described,) = result.metrics["closed_form"]  # EASE's weights are [0]: only SLIT considered
    assert described["kind"] == "slit" and described["weight"] > 0 and described["gain_se"] > 1.0
    assert set(described["valid_by_weight"]) == {"0", "0.5", "2"}
    assert described["rank"] == min(4 * 16, N_ITEMS - 1) and described["half_life"] in (3.0, 10.0, 30.0)
    assert result.metrics["valid"]["ndcg@10"] == pytest.approx(described["valid_by_weight"][f"{described['weight']:g}"],
                                                                abs=1e-9)
    assert described["valid_by_weight"][f"{described['weight']:g}"] > described["valid_by_weight"]["0"] + 0.2
    run = load_run(result.run_dir)
    assert run.meta["closed_form"][0]["kind"] == "slit"
    assert np.allclose(np.linalg.norm(run.item_vectors, axis=1), 1.0, atol=1e-4)
    assert result.metrics["train_serve_max_abs_diff"] < 1e-4
    histories = build_training_data(cfg.data).train_histories()
    assert np.abs(run.user_encoder.encode(histories) - run.user_vectors).max() < 1e-5
    report = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert json.loads(report.stdout)["ndcg@10"] == pytest.approx(result.metrics["test"]["ndcg@10"], abs=1e-9)
    assert "a closed-form SLIT member (weight" in write_model_card(result.run_dir).read_text()


def test_both_members_are_tried_in_turn_and_the_towers_resume(walk_run: dict) -> None:
    """EASE first, then SLIT on top of what EASE left; the towers' checkpoint is reused."""
    cfg = load_config(walk_run["config_path"], str(walk_run["folder"]),
                      ["ease.weights=[0, 1]", "ease.transition_weights=[0, 2]"])
    result = train(cfg, walk_run["result"].run_dir, resume=True, progress=False)
    ease, slit = result.metrics["closed_form"]
    assert ease["kind"] == "ease" and slit["kind"] == "slit" and slit["weight"] == 2.0
    assert slit["valid_by_weight"]["0"] == pytest.approx(ease["valid_by_weight"][f"{ease['weight']:g}"], abs=1e-9)
    (first,) = walk_run["result"].metrics["closed_form"]  # the same towers (resumed): the same base on valid
    assert ease["valid_by_weight"]["0"] == pytest.approx(first["valid_by_weight"]["0"], abs=1e-12)
    kept = [m["kind"] for m in load_run(result.run_dir).meta["closed_form"]]
    assert kept == (["ease", "slit"] if ease["weight"] > 0 else ["slit"])


def test_a_split_without_time_order_skips_the_slit_member(tmp_path: Path) -> None:
    folder = write_tiktok_slice(tmp_path / "tiktok-slice", every=16)
    cfg = load_config(write_test_config(tmp_path / "t.toml"), str(folder),
                      ["ease.transition_weights=[0, 1]", "train.epochs=1"])
    result = train(cfg, tmp_path / "run", resume=False, progress=False)
    assert result.metrics["closed_form"] == [{"kind": "slit", "weight": 0.0,
                                              "skipped": "the predefined split has no time order"}]
    assert "closed_form" not in load_run(result.run_dir).meta
