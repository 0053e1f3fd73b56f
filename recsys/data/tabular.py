"""Generic CSV/Parquet datasets with a column mapping, for catalogues that are not a benchmark.

A folder holds `items.{csv,parquet}`, `interactions.{csv,parquet}`, optional `<medium>_feat.npy`,
and optional `dataset.toml` whose `[columns]` table maps canonical names to the file's names:

    [columns]
    user_id = "customer"
    item_id = "sku"
    timestamp = "ts"

`timestamp` is optional: without it the interactions file's row order is the time order
(`Dataset.timestamps_synthetic`, reported by `recsys data validate`), as for TikTok.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import polars as pl

from recsys.data.errors import ProblemLog
from recsys.data.schema import Dataset
from recsys.data.tables import ROW, assemble, cast_checked, read_delimited, require_columns
from recsys.data.tiktok import load_feature_files


def _find(path: Path, stem: str) -> Path | None:
    for suffix in (".parquet", ".csv", ".tsv"):
        if (path / f"{stem}{suffix}").exists():
            return path / f"{stem}{suffix}"
    return None


def is_tabular_layout(path: Path) -> bool:
    return _find(path, "interactions") is not None and _find(path, "items") is not None


def _read(file: Path) -> pl.DataFrame:
    if file.suffix == ".parquet":
        return pl.read_parquet(file).with_row_index(ROW, offset=1)
    return read_delimited(file, "\t" if file.suffix == ".tsv" else ",")


def load_tabular(path: Path, name: str | None = None) -> Dataset:
    log = ProblemLog()
    mapping: dict[str, str] = {}
    if (path / "dataset.toml").exists():
        mapping = tomllib.loads((path / "dataset.toml").read_text()).get("columns", {})
    inter_file, item_file = _find(path, "interactions"), _find(path, "items")
    assert inter_file and item_file, f"{path}: needs items.* and interactions.*"
    inter = _read(inter_file).rename({v: k for k, v in mapping.items() if v in _read(inter_file).columns})
    items = _read(item_file).rename({v: k for k, v in mapping.items() if v in _read(item_file).columns})
    timestamps_synthetic = False
    if require_columns(inter, ["user_id", "item_id"], inter_file, log):
        inter = cast_checked(inter, "user_id", pl.String(), inter_file, log)
        inter = cast_checked(inter, "item_id", pl.String(), inter_file, log)
        if "timestamp" in inter.columns:
            inter = cast_checked(inter, "timestamp", pl.Int64(), inter_file, log)
        else:  # allowed: the file's row order is the time order (said by `recsys data validate`)
            inter = inter.with_columns(pl.col(ROW).cast(pl.Int64).alias("timestamp"))
            timestamps_synthetic = True
        if "weight" in inter.columns:
            inter = cast_checked(inter, "weight", pl.Float32(), inter_file, log)
    if require_columns(items, ["item_id"], item_file, log):
        items = cast_checked(items, "item_id", pl.String(), item_file, log)
    features = load_feature_files(path, log)
    return assemble(name or path.name, items, item_file, inter, inter_file, log, features=features,
                    timestamps_synthetic=timestamps_synthetic)
