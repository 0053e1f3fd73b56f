"""`train.refit`: once valid has chosen, every member is trained again on train + valid and that model is
served and tested (`training.run.refit_run`), on a small real TikTok slice (the published split).
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
from recsys.data.registry import load_dataset
from recsys.data.splits import apply_split, fold_valid_into_train
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.data import build_training_data
from training.model_card import write_model_card
from training.run import REFIT_DIR, train
from training_slices import write_test_config, write_tiktok_slice

# two towers and the closed-form member, all refitted; a cosine lr, so the refit must replay the selection fit's schedule
SETTINGS = ["train.ensemble=2", "ease.weights=[1.0]", 'train.lr_schedule="cosine"', "train.epochs=30", "train.patience=3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("refit")
    return {"root": root, "folder": write_tiktok_slice(root / "tiktok-slice"), "config": write_test_config(root / "t.toml")}


@pytest.fixture(scope="module")
def runs(setup: dict) -> dict:
    """The same config trained without and with the refit, each from scratch."""
    plain = load_config(setup["config"], str(setup["folder"]), SETTINGS)
    refit = load_config(setup["config"], str(setup["folder"]), [*SETTINGS, "train.refit=true"])
    return {"plain": train(plain, setup["root"] / "plain", resume=False, progress=False),
            "refit": train(refit, setup["root"] / "refit", resume=False, progress=False), "config": refit}


def test_valid_is_relabelled_train_and_nothing_else_moves(setup: dict) -> None:
    split = apply_split(load_dataset(str(setup["folder"])), "predefined")
    folded = fold_valid_into_train(split)
    before, after = split.interactions, folded.interactions
    assert after.height == before.height and after.drop("split").equals(before.drop("split"))  # same rows, same order
    assert folded.split("valid").height == 0 and folded.split("test").equals(split.split("test"))
    assert folded.split("train").height == split.split("train").height + split.split("valid").height


def test_each_member_trains_again_on_train_and_valid_for_the_epochs_valid_chose(setup: dict, runs: dict) -> None:
    plain, refit = runs["plain"], runs["refit"]
    chosen = [m["best_epoch"] for m in plain.metrics["members"]]
    report = refit.metrics["refit"]
    assert report["epochs"] == chosen and all(e >= 1 for e in chosen)
    assert min(chosen) < runs["config"].train.epochs, "every member chose its last epoch: the schedule check below is moot"
    folded = build_training_data(runs["config"].data, valid_in_train=True)
    assert report["train_pairs"] == len(folded.train_users) > plain.metrics["data"]["n_train_pairs"]
    for k, epochs in enumerate(chosen):  # exactly that many epochs, none evaluated on valid (there is none)
        loaded = load_checkpoint(setup["root"] / "refit" / REFIT_DIR / str(k), runs["config"].member(k).fingerprint())
        assert loaded is not None
        state = loaded[2]
        assert state.epoch == epochs == state.best_epoch and all("valid" not in h for h in state.history)
        selection = plain.metrics["members"][k]["history"][:epochs]  # the same lr, epoch by epoch, as the selection fit
        assert [h["lr"] for h in state.history] == [h["lr"] for h in selection]
    # valid is the selection fit's (the same towers and member as the plain run), test the refit's
    assert refit.metrics["valid"] == plain.metrics["valid"]
    assert report["selection_fit_test"] == plain.metrics["test"]
    assert refit.metrics["test"]["ndcg@20"] != plain.metrics["test"]["ndcg@20"]
    assert refit.metrics["closed_form"]["weight"] == plain.metrics["closed_form"]["weight"] == 1.0
    assert refit.metrics["train_serve_max_abs_diff"] < 1e-4


def test_the_served_model_is_the_refit_and_the_harness_agrees(setup: dict, runs: dict) -> None:
    run_dir = runs["refit"].run_dir
    run = load_run(run_dir)
    assert not np.array_equal(run.item_vectors, load_run(runs["plain"].run_dir).item_vectors)
    # the served encoder over train + valid histories gives the exported user vectors
    histories = build_training_data(runs["config"].data, valid_in_train=True).train_histories()
    assert np.abs(run.user_encoder.encode(histories) - run.user_vectors).max() < 1e-5
    test = CliRunner().invoke(app, ["evaluate", "--run", str(run_dir), "--split", "test", "--json"])
    assert test.exit_code == 0, test.output
    report = json.loads(test.stdout)
    assert report["ndcg@20"] == pytest.approx(runs["refit"].metrics["test"]["ndcg@20"], abs=1e-9)
    assert report["ranked_from"] == "train+valid"  # the run's input and mask: its train, which holds valid now
    valid = CliRunner().invoke(app, ["evaluate", "--run", str(run_dir), "--split", "valid", "--json"])
    assert valid.exit_code != 0 and "refit" in valid.output and "Traceback" not in valid.output
    card = write_model_card(run_dir).read_text()  # what an on-call engineer reads says what was served
    assert "served as a refit" in card and "served as a refit" not in write_model_card(runs["plain"].run_dir).read_text()


def test_a_trained_run_refits_by_resuming_its_selection_fit(setup: dict, runs: dict) -> None:
    """The refit is outside the config fingerprint: turning it on for a trained run resumes its towers (no
    retraining) and trains only the refit, ending exactly where a refit run trained from scratch ends."""
    run_dir = setup["root"] / "later"
    plain = load_config(setup["config"], str(setup["folder"]), SETTINGS)
    assert plain.fingerprint() == runs["config"].fingerprint()
    train(plain, run_dir, resume=False, progress=False)
    later = train(runs["config"], run_dir, resume=True, progress=False)
    assert later.metrics["test"] == runs["refit"].metrics["test"]
    assert np.array_equal(load_run(run_dir).item_vectors, load_run(runs["refit"].run_dir).item_vectors)


def test_a_refit_without_a_valid_split_is_refused(setup: dict, tmp_path: Path) -> None:
    folder = tmp_path / "no-valid"
    folder.mkdir()
    source = Path(setup["folder"])
    pl.read_parquet(source / "interactions.parquet").filter(pl.col("split") != "valid").write_parquet(
        folder / "interactions.parquet")
    for medium in ("image", "audio"):
        (folder / f"{medium}_feat.npy").write_bytes((source / f"{medium}_feat.npy").read_bytes())
    cfg = load_config(setup["config"], str(folder), ["train.refit=true"])
    with pytest.raises(ValueError, match="no valid interactions"):
        train(cfg, tmp_path / "run", resume=False, progress=False)
    with pytest.raises(ValueError, match="refit are the run's"):
        load_config(setup["config"], str(setup["folder"]), ['train.member_overrides=[{"train.refit" = true}]'])
