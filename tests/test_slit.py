"""SLIT, the closed-form next-item baseline (`recsys.baselines.slit`).

Controlled data: users walk the catalogue in order (item i is followed by i + 1), which an order-blind model
(EASE) cannot tell from i - 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.baselines import make_baseline
from recsys.baselines.slit import SLIT, recency_rows, transition_targets
from recsys.data import load_dataset
from recsys.data.splits import apply_split
from recsys.models.closed_form import item_part

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


def test_slit_refuses_a_dataset_without_time(tmp_path: Path) -> None:
    """TikTok has no timestamps (they are its row order): a transition model would learn the file's order."""
    from training_slices import write_tiktok_slice

    ds = load_dataset(str(write_tiktok_slice(tmp_path / "slice", every=16)))
    assert ds.timestamps_synthetic
    with pytest.raises(ValueError, match="timestamps are synthetic"):
        SLIT().fit(ds, ds.split("train"))
    from typer.testing import CliRunner

    from commands.main import app

    out = CliRunner().invoke(app, ["evaluate", "--baseline", "slit", "--dataset", str(tmp_path / "slice"),
                                   "--split", "test", "--json"])
    assert out.exit_code == 2 and "baseline slit cannot be fitted on slice" in out.output, out.output
    assert "Traceback" not in out.output
