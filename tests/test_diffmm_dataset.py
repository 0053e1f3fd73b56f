"""The DiffMM split converter: loads only scipy COO matrices, keeps every pair in its split."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from benchmarks.diffmm_dataset import SPLIT_FILES, build, read_split


def _write_split(folder: Path, pairs: dict[str, list[tuple[int, int]]], shape=(4, 5)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in SPLIT_FILES.items():
        rows, cols = zip(*pairs[split])
        matrix = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
        (folder / name).write_bytes(pickle.dumps(matrix))


def test_build_keeps_each_pair_in_its_split(tmp_path: Path) -> None:
    pairs = {"train": [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4)], "valid": [(0, 2), (1, 3)], "test": [(2, 0)]}
    _write_split(tmp_path / "src", pairs)
    out = build(tmp_path / "src", tmp_path / "out")
    frame = pl.read_csv(out / "interactions.csv")
    assert frame.group_by("split").len().sort("split").rows() == [("test", 1), ("train", 5), ("valid", 2)]
    assert frame.unique(["user_id", "item_id"]).height == 8
    # One user keeps one label across splits: user 0 has 2 train events and 1 valid one.
    per_user = frame.group_by("user_id").agg(pl.col("split")).to_dicts()
    assert ["train", "train", "valid"] in [sorted(row["split"]) for row in per_user]
    assert frame["user_id"].n_unique() == 4 and frame["item_id"].n_unique() == 5


def test_a_pair_in_two_splits_is_refused(tmp_path: Path) -> None:
    pairs = {"train": [(0, 0), (1, 1)], "valid": [(0, 0)], "test": [(2, 2)]}
    _write_split(tmp_path / "src", pairs)
    with pytest.raises(ValueError, match="more than one split"):
        build(tmp_path / "src", tmp_path / "out")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_is_not_a_matrix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trnMat.pkl"
    path.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        read_split(path)
