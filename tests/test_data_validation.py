"""The data layer loads the shared real datasets and names every planted fault (file, row, column)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data import DataValidationError, load_dataset, load_path
from recsys.data.splits import apply_split, global_temporal

DATA = Path(os.environ.get("RECSYS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
RECSYS = [sys.executable, "-m", "commands.main"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_DATA_DIR": str(DATA), "COLUMNS": "200"}
    return subprocess.run([*RECSYS, *args], capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])


def test_movielens_recbole_layout_loads_all_ratings_with_text_medium():
    ds = load_dataset("ml-100k")
    assert (ds.n_items, ds.n_users, ds.interactions.height) == (1682, 943, 100_000)
    assert ds.items.filter(pl.col("item_id") == "1")["text"][0].startswith("Toy Story (1995). Genres: Animation")
    assert set(ds.feature_mask) == {"text"}


def test_tiktok_loads_predefined_split_and_features():
    ds = load_dataset("tiktok")
    counts = dict(ds.interactions.group_by("split").len().iter_rows())
    assert counts == {"train": 59_541, "valid": 3_051, "test": 6_130}
    assert ds.item_features["image"].shape == (6710, 128) and ds.item_features["audio"].dtype == np.float32
    assert ds.timestamps_synthetic


def _write_grouplens(src: Path, dst: Path) -> None:
    """Rewrite the RecBole files in the official GroupLens layout (u.data, u.item, u.user)."""
    inter = pl.read_csv(src / "ml-100k.inter", separator="\t", infer_schema=False)
    inter.write_csv(dst / "u.data", separator="\t", include_header=False)
    items = pl.read_csv(src / "ml-100k.item", separator="\t", infer_schema=False, quote_char=None)
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    lines = []
    for item_id, title, year, classes in items.iter_rows():
        flags = ["1" if g in (classes or "").split(" ") else "0" for g in genres]
        lines.append("|".join([item_id, f"{title} ({year})", f"01-Jan-{year}", "", "http://imdb", *flags]))
    (dst / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1", errors="replace")
    users = pl.read_csv(src / "ml-100k.user", separator="\t", infer_schema=False)
    users.write_csv(dst / "u.user", separator="|", include_header=False)


def test_grouplens_layout_gives_the_same_dataset_as_recbole_layout(tmp_path):
    _write_grouplens(DATA / "ml-100k", tmp_path)
    official = load_path(tmp_path, name="ml-100k")
    recbole = load_dataset("ml-100k")
    assert official.interactions.select("user_id", "item_id", "timestamp").equals(
        recbole.interactions.select("user_id", "item_id", "timestamp"))
    assert official.items["title"][0] == "Toy Story"
    assert "Animation" in official.items["text"][0]


def test_broken_movielens_copy_reports_each_planted_fault(tmp_path):
    src = DATA / "ml-100k"
    broken = tmp_path / "ml-100k"
    broken.mkdir()
    inter_lines = (src / "ml-100k.inter").read_text().splitlines()
    inter_lines[5] = "10\t20\tthree\t881250949"  # data row 5: rating not a number
    inter_lines[9] = "10\t99999\t3\t881250949"   # data row 9: unknown item
    inter_lines[12] = "10\t20\t3\t"              # data row 12: empty timestamp
    (broken / "ml-100k.inter").write_text("\n".join(inter_lines) + "\n")
    item_lines = (src / "ml-100k.item").read_text().splitlines()
    item_lines[3] = item_lines[1]                # data row 3 repeats item 1
    (broken / "ml-100k.item").write_text("\n".join(item_lines) + "\n")

    with pytest.raises(DataValidationError) as err:
        load_path(broken)
    found = {(Path(p.file).name, p.row, p.column) for p in err.value.problems}
    assert ("ml-100k.inter", 5, "rating") in found
    assert ("ml-100k.inter", 9, "item_id") in found
    assert ("ml-100k.inter", 12, "timestamp") in found
    assert ("ml-100k.item", 3, "item_id") in found

    result = run_cli("data", "validate", str(broken))
    assert result.returncode == 1
    for needle in ("row 5, column 'rating'", "row 9, column 'item_id'", "unknown item '99999'",
                   "row 12, column 'timestamp'", "duplicate id '1'"):
        assert needle in result.stdout, (needle, result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_broken_tiktok_copy_reports_nan_ragged_missing_column_and_bad_split(tmp_path):
    src = DATA / "tiktok"
    broken = tmp_path / "tiktok"
    broken.mkdir()
    inter = pl.read_parquet(src / "interactions.parquet")
    inter = inter.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("holdout")).otherwise(pl.col("split")).alias("split"))
    inter.write_parquet(broken / "interactions.parquet")
    image = np.load(src / "image_feat.npy").astype(np.float32)
    image[42, 3] = np.nan
    np.save(broken / "image_feat.npy", image)
    np.save(broken / "audio_feat.npy", np.load(src / "audio_feat.npy")[:-1])  # one row short: ragged

    with pytest.raises(DataValidationError) as err:
        load_path(broken)
    messages = [str(p) for p in err.value.problems]
    assert any("image_feat.npy, row 43, column 'image[3]'" in m and "NaN" in m for m in messages), messages
    assert any("audio_feat.npy" in m and "6709 rows" in m for m in messages), messages
    assert any("row 8, column 'split'" in m and "holdout" in m for m in messages), messages

    inter.drop("user_id").write_parquet(broken / "interactions.parquet")
    with pytest.raises(DataValidationError) as err:
        load_path(broken)
    assert any(p.column == "user_id" and "missing" in p.message for p in err.value.problems)


@pytest.mark.parametrize("name", ["ml-100k", "tiktok"])
def test_cli_validates_registered_shared_datasets(name):
    result = run_cli("data", "validate", "--dataset", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_generic_tabular_layout_with_column_mapping(tmp_path):
    pl.DataFrame({"sku": ["a", "b", "c"], "name": ["red shoe", "blue hat", "song"]}).write_csv(tmp_path / "items.csv")
    pl.DataFrame({"customer": ["u1", "u1", "u2"], "sku": ["a", "b", "c"], "ts": [1, 2, 3]}).write_parquet(
        tmp_path / "interactions.parquet")
    (tmp_path / "dataset.toml").write_text('[columns]\nuser_id = "customer"\nitem_id = "sku"\ntimestamp = "ts"\ntext = "name"\n')
    ds = load_path(tmp_path)
    assert ds.n_items == 3 and ds.n_users == 2
    assert ds.items["media"].to_list() == [["text"], ["text"], ["text"]]


def test_leave_last_out_holds_out_each_users_latest_events():
    ds = apply_split(load_dataset("ml-100k"), "leave-last-out")
    inter = ds.interactions
    last_train = inter.filter(pl.col("split") == "train").group_by("user_index").agg(pl.col("timestamp").max())
    test = inter.filter(pl.col("split") == "test").select("user_index", pl.col("timestamp").alias("t_test"))
    joined = last_train.join(test, on="user_index")
    assert joined.height == 943
    assert (joined["timestamp"] <= joined["t_test"]).all()


def test_global_temporal_cut_puts_no_training_event_after_a_test_event():
    inter = global_temporal(load_dataset("ml-100k").interactions, 0.1, 0.1)
    assert inter.filter(pl.col("split") == "train")["timestamp"].max() <= inter.filter(pl.col("split") == "test")["timestamp"].min()


def _integer_id_catalogue(folder: Path, with_user_column: bool = True) -> Path:
    """Parquet tables with integer ids and a split label but no timestamp (a common export)."""
    folder.mkdir()
    inter = {"item_id": [10, 11, 10, 12, 11], "split": ["train", "test", "train", "valid", "train"]}
    if with_user_column:
        inter = {"user_id": [1, 1, 2, 2, 3], **inter}
    pl.DataFrame(inter).write_parquet(folder / "interactions.parquet")
    pl.DataFrame({"item_id": [10, 11, 12], "title": ["Alpha", "Beta", "Gamma"]}).write_parquet(folder / "items.parquet")
    return folder


def test_integer_ids_without_timestamps_load_in_row_order(tmp_path):
    ds = load_path(_integer_id_catalogue(tmp_path / "shop"))
    assert ds.timestamps_synthetic and ds.interactions["timestamp"].to_list() == [1, 2, 3, 4, 5]
    assert ds.interactions["item_id"].to_list() == ["10", "11", "10", "12", "11"]
    done = run_cli("data", "validate", str(tmp_path / "shop"))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "row order" in done.stdout and "Traceback" not in done.stderr


def test_missing_id_column_is_reported_not_a_traceback(tmp_path):
    done = run_cli("data", "validate", str(_integer_id_catalogue(tmp_path / "shop", with_user_column=False)))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "interactions.parquet" in done.stdout and "user_id" in done.stdout and "required column is missing" in done.stdout


def test_unknown_dataset_name_lists_the_known_ones():
    done = run_cli("data", "validate", "--dataset", "ml100k")
    assert done.returncode == 1
    assert "did you mean 'ml-100k'" in done.stdout and "tiktok" in done.stdout
