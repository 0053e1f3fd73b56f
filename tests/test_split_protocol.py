"""The leave-last-out tie rule and `recsys data export --format recbole`: our split, written for RecBole.

Ties matter on ML-100K: 415 of 943 users have several events at their last second, so which one
is "last" decides the test item. The default follows the source file (RecBole's stable sort);
the old item-index rule stays selectable.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from recsys.data import load_dataset
from recsys.data.splits import apply_split, leave_last_out
from training.evaluation_protocol import EvaluationError, prepare_split


def _events(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    """(user, item, timestamp) rows in source-file order."""
    users, items, ts = zip(*rows)
    return pl.DataFrame({"user_index": pl.Series(users, dtype=pl.Int32), "item_index": pl.Series(items, dtype=pl.Int32),
                         "timestamp": pl.Series(ts, dtype=pl.Int64)})


def _held_out(frame: pl.DataFrame) -> dict[str, list[int]]:
    return {part: frame.filter(pl.col("split") == part)["item_index"].to_list() for part in ("valid", "test")}


def test_equal_timestamps_follow_the_file_by_default_and_item_index_on_request():
    # One user: item 9 first, then items 5, 7, 2 in that file order, all at the last second.
    events = _events([(0, 9, 100), (0, 5, 200), (0, 7, 200), (0, 2, 200)])
    assert _held_out(leave_last_out(events)) == {"valid": [7], "test": [2]}
    assert _held_out(leave_last_out(events, tie_break="item-index")) == {"valid": [5], "test": [7]}
    with pytest.raises(ValueError, match="unknown tie_break 'newest'"):
        leave_last_out(events, tie_break="newest")  # type: ignore[arg-type]


def test_ml100k_test_item_is_the_users_last_row_in_the_file():
    ds = load_dataset("ml-100k")
    split = apply_split(ds, "leave-last-out").interactions.with_row_index("row")
    last = split.sort("timestamp", "row").group_by("user_index").agg(pl.col("split").last(), pl.col("row").last())
    assert last["split"].unique().to_list() == ["test"]
    old = apply_split(ds, "leave-last-out", "item-index").interactions
    changed = (split["split"] != old["split"]).sum()
    assert 0 < changed  # the rule matters on ML-100K (several items at the last second)
    assert old.filter(pl.col("split") == "test").height == split.filter(pl.col("split") == "test").height == 943
    with pytest.raises(EvaluationError, match="unknown tie rule"):
        prepare_split(ds, "test", "leave-last-out", "newest")  # type: ignore[arg-type]


def _read_inter(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, separator="\t", infer_schema=False)


def test_recbole_export_writes_exactly_our_split(tmp_path: Path):
    out = tmp_path / "ml-100k"
    result = CliRunner().invoke(app, ["data", "export", "--format", "recbole", "--dataset", "ml-100k", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "benchmark_filename: [train, valid, test]" in result.output
    ours = apply_split(load_dataset("ml-100k"), "leave-last-out").interactions
    for part in ("train", "valid", "test"):
        written = _read_inter(out / f"ml-100k.{part}.inter")
        assert written.columns == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
        expected = ours.filter(pl.col("split") == part)
        assert written.height == expected.height
        assert written["user_id:token"].to_list() == expected["user_id"].to_list()
        assert written["item_id:token"].to_list() == expected["item_id"].to_list()
        assert written["timestamp:float"].cast(pl.Float64).cast(pl.Int64).to_list() == expected["timestamp"].to_list()
    assert _read_inter(out / "ml-100k.test.inter")["user_id:token"].n_unique() == 943


def test_recbole_export_keeps_a_predefined_split_and_the_old_tie_rule(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "export", "--dataset", "ml-100k", "--out", str(tmp_path / "old"),
                                 "--tie-break", "item-index", "--name", "ml-old"])
    assert result.exit_code == 0, result.output
    old = apply_split(load_dataset("ml-100k"), "leave-last-out", "item-index").interactions.filter(pl.col("split") == "test")
    assert _read_inter(tmp_path / "old" / "ml-old.test.inter")["item_id:token"].to_list() == old["item_id"].to_list()


@pytest.mark.parametrize("args, message", [
    (["--format", "parquet"], "unknown --format 'parquet'"),
    (["--tie-break", "newest"], "unknown --tie-break 'newest'"),
    (["--split-strategy", "predefined"], "has no predefined split"),
])
def test_recbole_export_refuses_bad_options_with_a_message(tmp_path: Path, args: list[str], message: str):
    result = CliRunner().invoke(app, ["data", "export", "--dataset", "ml-100k", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()
