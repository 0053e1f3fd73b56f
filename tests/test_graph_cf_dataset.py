"""The graph-CF split converter (LightGCN's adjacency lines, SELFRec's triples): splits kept, valid carved or read."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from benchmarks.graph_cf_dataset import build
from recsys.data import load_dataset


def _adjacency(path: Path, rows: dict[int, list[int]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in rows.items()))
    return path


def test_adjacency_lines_keep_the_published_test_and_carve_a_tenth_of_train_for_valid(tmp_path: Path) -> None:
    train = _adjacency(tmp_path / "train.txt", {0: list(range(20)), 1: list(range(5, 15)), 2: [1, 2]})
    test = _adjacency(tmp_path / "test.txt", {0: [20, 21], 1: [3]})
    out = build(train, test, tmp_path / "out")
    frame = pl.read_csv(out / "interactions.csv")
    assert frame.height == 20 + 10 + 2 + 3 and frame.unique(["user_id", "item_id"]).height == frame.height
    counts = {(r["user_id"], r["split"]): r["len"] for r in frame.group_by("user_id", "split").len().to_dicts()}
    by_size = frame.group_by("user_id").len().sort("len")["user_id"].to_list()
    short, mid, long = by_size  # users 2, 1, 0
    assert (counts[(long, "train")], counts[(long, "valid")], counts[(long, "test")]) == (18, 2, 2)
    assert (counts[(mid, "train")], counts[(mid, "valid")], counts[(mid, "test")]) == (9, 1, 1)
    assert counts[(short, "train")] == 2 and (short, "valid") not in counts  # too short to give one up
    assert all(u.startswith("u") for u in frame["user_id"]) and all(i.startswith("i") for i in frame["item_id"])
    dataset = load_dataset(str(out))
    assert dataset.n_users == 3 and dataset.n_items == 22


def test_triples_with_a_published_valid_file_keep_all_three_splits_as_given(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1 1\n0 2 1\n0 2 1\n1 3 1\n")  # one repeated pair: kept once
    (tmp_path / "valid.txt").write_text("0 3 1\n")
    (tmp_path / "test.txt").write_text("1 1 1\n1 2 1\n")
    out = build(tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "out", "triples",
                valid_path=tmp_path / "valid.txt")
    frame = pl.read_csv(out / "interactions.csv")
    assert sorted(frame.group_by("split").len().rows()) == [("test", 2), ("train", 3), ("valid", 1)]


def test_a_pair_in_two_splits_and_a_malformed_line_are_refused(tmp_path: Path) -> None:
    train = _adjacency(tmp_path / "train.txt", {0: [1, 2, 3]})
    with pytest.raises(ValueError, match="1 \\(user, item\\) pairs appear in more than one split"):
        build(train, _adjacency(tmp_path / "test.txt", {0: [3, 4]}), tmp_path / "out")
    (tmp_path / "bad.txt").write_text("0 1 2\n1 x 3\n")
    with pytest.raises(ValueError, match="bad.txt:2: expected user item item"):
        build(tmp_path / "bad.txt", train, tmp_path / "out")


def test_sequences_become_timed_events_whose_leave_last_out_split_is_the_published_one(tmp_path: Path) -> None:
    """SELFRec's next-item format (`seq:item item ...`, the test file the item after): no split column, the
    position as the timestamp, so leave-last-out gives test = the published item, valid = the one before."""
    from recsys.data.splits import apply_split

    (tmp_path / "train.txt").write_text("1:5 6 7 8\n2:9 5 10 11 12\n")
    (tmp_path / "test.txt").write_text("1:9\n2:6\n")
    out = build(tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "out", "sequences")
    frame = pl.read_csv(out / "interactions.csv")
    assert "split" not in frame.columns and frame.height == 4 + 5 + 2
    split = apply_split(load_dataset(str(out)), "leave-last-out")
    items = split.items.select("item_id", "item_index")

    def held(name: str) -> list[tuple[int, str]]:
        rows = split.split(name).join(items, on="item_index").join(
            frame.group_by("user_id").len(), on="user_id").sort("len")
        return rows.select("len", "item_id").rows()

    # the opaque labels hide 9 / 6 / 8 / 12; each user's test event is its published item, valid its last train item
    label = {(r["user_id"], r["timestamp"]): r["item_id"] for r in frame.to_dicts()}
    short, long = frame.group_by("user_id").len().sort("len")["user_id"].to_list()
    assert held("test") == [(5, label[(short, 4)]), (6, label[(long, 5)])]
    assert held("valid") == [(5, label[(short, 3)]), (6, label[(long, 4)])]
    assert label[(short, 4)] == label[(long, 0)]  # item 9: user 1's test item is user 2's first item


def test_sequence_files_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("1:5 6 7\n")
    (tmp_path / "test.txt").write_text("2:9\n")
    with pytest.raises(ValueError, match="test.txt:1: sequence '2' has no train sequence"):
        build(tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "out", "sequences")
    (tmp_path / "test.txt").write_text("1:6\n")
    with pytest.raises(ValueError, match="1 repeated"):
        build(tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "out", "sequences")
    (tmp_path / "train.txt").write_text("1 5 6 7\n")
    with pytest.raises(ValueError, match="train.txt:1: expected 'sequence_id:item"):
        build(tmp_path / "train.txt", tmp_path / "test.txt", tmp_path / "out", "sequences")
