"""The Last.fm (HetRec 2011) converter: every pair kept once, MMRec's per-user split, bad files refused."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from benchmarks.lastfm_dataset import build
from recsys.data import load_dataset


def _write(path: Path, rows: list[tuple[int, int, int]], header: str = "userID\tartistID\tweight") -> Path:
    path.write_text(header + "\n" + "".join(f"{u}\t{a}\t{w}\n" for u, a, w in rows))
    return path


def test_every_pair_lands_once_and_each_user_gives_a_tenth_to_test_and_valid(tmp_path: Path) -> None:
    # user 1: 20 artists; user 2: 10; user 3: 2 (too short to hold anything out)
    rows = [(1, a, 100 - a) for a in range(20)] + [(2, a, 5) for a in range(5, 15)] + [(3, 1, 7), (3, 2, 7)]
    out = build(_write(tmp_path / "user_artists.dat", rows), tmp_path / "out")
    frame = pl.read_csv(out / "interactions.csv")
    assert frame.height == len(rows) and frame.unique(["user_id", "item_id"]).height == len(rows)
    counts = {(r["user_id"], r["split"]): r["len"] for r in frame.group_by("user_id", "split").len().to_dicts()}
    sizes = frame.group_by("user_id").len().sort("len")["user_id"].to_list()  # users by history length: 3, 2, 1
    short, mid, long = sizes
    assert (counts[(long, "test")], counts[(long, "valid")], counts[(long, "train")]) == (2, 2, 16)
    assert (counts[(mid, "test")], counts[(mid, "valid")], counts[(mid, "train")]) == (1, 1, 8)
    assert counts == {**counts, (short, "train"): 2} and (short, "test") not in counts
    # Opaque labels: no original id survives, and the items file lists exactly the artists used.
    assert all(u.startswith("u") for u in frame["user_id"]) and all(i.startswith("i") for i in frame["item_id"])
    assert sorted(pl.read_csv(out / "items.csv")["item_id"].to_list()) == sorted(frame["item_id"].unique().to_list())
    # The project's generic loader reads it with the written split.
    dataset = load_dataset(str(out))
    assert dataset.n_users == 3 and dataset.n_items == 20  # artists 0-19


def test_the_split_is_reproducible_for_a_seed(tmp_path: Path) -> None:
    source = _write(tmp_path / "user_artists.dat", [(u, a, 1) for u in range(1, 6) for a in range(u, u + 12)])
    first = pl.read_csv(build(source, tmp_path / "a", seed=3) / "interactions.csv")
    again = pl.read_csv(build(source, tmp_path / "b", seed=3) / "interactions.csv")
    other = pl.read_csv(build(source, tmp_path / "c", seed=4) / "interactions.csv")
    assert first.equals(again)
    assert not first.equals(other)


def test_a_file_with_other_columns_is_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "user_artists.dat", [(1, 2, 3)], header="user\tartist\tplays")
    with pytest.raises(ValueError, match="expected the columns userID, artistID, weight"):
        build(source, tmp_path / "out")


def test_a_repeated_pair_is_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "user_artists.dat", [(1, 2, 3), (1, 2, 4), (1, 3, 1)])
    with pytest.raises(ValueError, match="1 \\(userID, artistID\\) pairs appear twice"):
        build(source, tmp_path / "out")
