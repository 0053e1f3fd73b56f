"""Test events are ranked from what the feed had read by then: on a time-ordered split, train + valid.

On a leave-one-out (or global temporal) split every test event follows the user's valid event, so
the feed that served the test moment had read the valid event too: it is in the user's window (the
input) and excluded from the answer (the mask). That is also RecBole's test protocol. The predefined
split (DiffMM's random held-out sets) and the valid split are ranked from train alone. One rule
(`recsys.data.splits.known_before`) serves the harness, the trainer's own test figure, baselines with
a history input and the materialisation of an online store "as of" a split.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from feature_store.materialize import known_rows
from recsys.data import load_dataset
from recsys.data.splits import apply_split, known_before
from training.config import load_config
from training.evaluation import evaluate_baseline
from training.evaluation_protocol import prepare_split
from training.evaluation_ranking import ranking_report
from training.run import train

N_PAIRS = 20


def _paired_folder(root: Path, n_users: int = 120) -> Path:
    """Items come in pairs (2k, 2k+1) consumed back to back. Each user's history: two whole pairs (train),
    then the first item of a third pair (valid) and its partner (test). The test item is predictable
    from the valid item alone; train items say nothing about it."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        pairs = rng.choice(N_PAIRS, size=3, replace=False)
        items = [2 * pairs[0], 2 * pairs[0] + 1, 2 * pairs[1], 2 * pairs[1] + 1, 2 * pairs[2], 2 * pairs[2] + 1]
        rows += [(f"u{u}", f"i{int(i)}", 1000 * u + t) for t, i in enumerate(items)]
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": [f"i{i}" for i in range(2 * N_PAIRS)]}).write_csv(root / "items.csv")
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").write_csv(root / "interactions.csv")
    return root


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> Path:
    return _paired_folder(tmp_path_factory.mktemp("paired") / "pairs")


def test_known_events_are_train_plus_valid_only_for_test_on_a_time_ordered_split(paired: Path):
    ds = load_dataset(paired)
    for strategy in ("leave-last-out", "temporal"):
        split = apply_split(ds, strategy)  # type: ignore[arg-type]
        parts = split.interactions["split"]
        assert known_before(split, "valid", strategy).height == (parts == "train").sum()
        assert known_before(split, "test", strategy).height == (parts != "test").sum()
    predefined = apply_split(ds, "leave-last-out").interactions  # a split column of the source's own
    fixed = apply_split(dataclasses.replace(ds, interactions=predefined), "predefined")
    assert known_before(fixed, "test", "predefined").height == (predefined["split"] == "train").sum()
    with pytest.raises(ValueError, match="unknown held-out split 'train'"):
        known_before(fixed, "train", "predefined")
    # the online store "as of" the test split holds the same rows (what `--held-out test` materialises)
    assert known_rows(ds, "leave-last-out", "test").interactions.height == 120 * 5
    assert known_rows(ds, "leave-last-out").interactions.height == 120 * 4


def test_the_valid_item_is_masked_when_ranking_test(paired: Path):
    ev = prepare_split(load_dataset(paired), "test", "leave-last-out")
    valid = dict(zip(*ev.dataset.split("valid").select("user_index", "item_index").to_numpy().T))
    test = dict(zip(*ev.held_out.select("user_index", "item_index").to_numpy().T))

    def valid_then_test(users: np.ndarray) -> np.ndarray:  # scores each user's valid item first, test item second
        scores = np.zeros((len(users), ev.n_items), np.float32)
        for row, u in enumerate(users):
            scores[row, valid[u]], scores[row, test[u]] = 2.0, 1.0
        return scores

    report = ranking_report(valid_then_test, ev)
    assert report["ndcg@10"] == pytest.approx(1.0) and report["mrr"] == pytest.approx(1.0)
    on_valid = prepare_split(load_dataset(paired), "valid", "leave-last-out")
    assert on_valid.known.height == on_valid.train.height  # valid is ranked from train alone


def test_a_history_model_reads_the_valid_event_when_ranking_test(paired: Path):
    """ItemKNN learns the pairs from train; only the valid event points at each user's test item."""
    report = evaluate_baseline("itemknn", str(paired), "test", split_strategy="leave-last-out")
    assert report["recall@10"] > 0.95, report["recall@10"]
    assert report["ranked_from"] == "train+valid"
    train_only = evaluate_baseline("itemknn", str(paired), "valid", split_strategy="leave-last-out")
    assert train_only["recall@10"] < 0.6 and train_only["ranked_from"] == "train"  # from train alone the third pair is a guess among 36 items


def test_train_prints_the_test_figure_recsys_evaluate_reports(paired: Path, tmp_path: Path):
    """The trainer's own test figure follows the same rule: users re-encoded from train + valid."""
    config = load_config(None, str(paired), ["train.epochs=3", "train.ensemble=1", "train.threads=1",
                                             "train.patience=1"])
    result = train(config, tmp_path / "run", resume=False, progress=False)
    out = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["ranked_from"] == "train+valid"
    for key in ("recall@10", "ndcg@10", "recall@20", "mrr"):
        assert report[key] == pytest.approx(result.metrics["test"][key], abs=1e-6), key
