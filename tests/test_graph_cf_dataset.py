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
