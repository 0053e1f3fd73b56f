"""RecBole's atomic files of any dataset: a benchmark split becomes the split column, `.item` and `timestamp`
are optional, and what `recsys data export --format recbole` writes loads back as the same split."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.data import load_dataset
from recsys.data.errors import DataValidationError
from recsys.data.registry import load_path

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))


def test_a_benchmark_split_without_an_item_file_loads_as_the_split_column(tmp_path: Path) -> None:
    folder = tmp_path / "gowalla-like"
    folder.mkdir()
    header = "user_id:token\titem_id:token\ttimestamp:float"
    _write(folder / "gowalla-like.train.inter", header, ["a\tx\t10.0", "a\ty\t11.0", "b\tx\t12.0", "b\tz\t13.0"])
    _write(folder / "gowalla-like.valid.inter", header, ["a\tz\t14.0"])
    _write(folder / "gowalla-like.test.inter", header, ["b\ty\t15.0", "c\tw\t16.0"])
    ds = load_path(folder)
    assert (ds.n_users, ds.n_items) == (3, 4) and not ds.timestamps_synthetic
    assert sorted(ds.items["item_id"].to_list()) == ["w", "x", "y", "z"]  # the items the interactions name
    rows = ds.interactions.select("user_id", "item_id", "timestamp", "split").rows()
    assert rows[-1] == ("c", "w", 16, "test") and rows[4] == ("a", "z", 14, "valid")
    assert dict(ds.interactions.group_by("split").len().iter_rows()) == {"train": 4, "valid": 1, "test": 2}


def test_one_inter_file_without_timestamps_takes_file_order_and_titles_from_its_item_file(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    _write(folder / "shop.inter", "user_id:token\titem_id:token\trating:float", ["1\t7\t5", "1\t8\t3", "2\t7\t4"])
    _write(folder / "shop.item", "item_id:token\ttitle:token_seq\tcategories:token_seq",
           ["7\tRed kettle\tKitchen", "8\tBlue mug\tKitchen Mugs"])
    ds = load_path(folder)
    assert ds.timestamps_synthetic and ds.interactions["timestamp"].to_list() == [1, 2, 3]
    assert ds.interactions["weight"].to_list() == [5.0, 3.0, 4.0]
    assert ds.items.filter(pl.col("item_id") == "8")["text"].item() == "Blue mug. Categories: Kitchen Mugs"


def _folder(root: Path, name: str, files: dict[str, tuple[str, list[str]]]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, (header, rows) in files.items():
        _write(folder / file, header, rows)
    return folder


def test_an_incomplete_benchmark_split_and_ambiguous_files_are_refused(tmp_path: Path) -> None:
    header = "user_id:token\titem_id:token"
    partial = _folder(tmp_path, "partial", {"p.train.inter": (header, ["1\t2"]), "p.test.inter": (header, ["1\t3"])})
    with pytest.raises(DataValidationError, match="exactly one .train.inter, .valid.inter and .test.inter"):
        load_path(partial)
    several = _folder(tmp_path, "several", {"a.inter": (header, ["1\t2"]), "b.inter": (header, ["1\t3"])})
    with pytest.raises(DataValidationError, match="several .inter files and none named several.inter"):
        load_path(several)
    missing = _folder(tmp_path, "missing", {"missing.inter": ("user:token\titem_id:token", ["1\t2"])})
    with pytest.raises(DataValidationError, match="user_id"):
        load_path(missing)


def test_what_data_export_writes_loads_back_as_the_same_split(tmp_path: Path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    pl.DataFrame({"item_id": [f"i{i}" for i in range(6)]}).write_csv(source / "items.csv")
    users = [f"u{u}" for u in range(5) for _ in range(6)]
    items = [f"i{(u + k) % 6}" for u in range(5) for k in range(6)]
    split = ["train", "train", "train", "train", "valid", "test"] * 5
    pl.DataFrame({"user_id": users, "item_id": items, "split": split}).write_csv(source / "interactions.csv")
    out = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "commands.main", "data", "export", "--format", "recbole",
                           "--dataset", str(source), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    back = load_dataset(str(out))
    key = ["user_id", "item_id", "split"]
    assert back.interactions.select(key).sort(key).equals(load_dataset(str(source)).interactions.select(key).sort(key))
