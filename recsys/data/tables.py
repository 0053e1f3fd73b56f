"""Turning raw tables into the canonical `Dataset`, checking everything on the way.

Adapters read their source format into string-typed frames with a `_row` column (1-based data
row in the source file) and hand them here, so type checks, id checks and feature checks are
written once and report problems the same way for every format.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.errors import ProblemLog
from recsys.data.schema import MEDIA, Dataset

ROW = "_row"


def read_delimited(path: Path, separator: str, columns: list[str] | None = None, has_header: bool = True,
                   encoding: str = "utf8") -> pl.DataFrame:
    """Read a text table with every column as a string (types are checked later, per row).

    Comma-separated files follow RFC 4180 (a field with a comma is quoted); tab-separated ones
    (GroupLens, RecBole) take quotes literally, as movie titles carry them. A file that cannot be
    parsed is one reported problem naming the file and what the parser said, not a traceback.
    """
    try:
        frame = pl.read_csv(
            path, separator=separator, has_header=has_header, new_columns=columns, infer_schema=False,
            quote_char='"' if separator == "," else None, encoding=encoding, truncate_ragged_lines=False,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as err:
        from recsys.data.errors import DataProblem, DataValidationError

        reason = str(err).splitlines()[0]
        raise DataValidationError([DataProblem(str(path), None, None, f"cannot be parsed as a table: {reason}")]) from None
    return frame.with_row_index(ROW, offset=1)


def require_columns(frame: pl.DataFrame, required: list[str], file: Path | str, log: ProblemLog) -> bool:
    missing = [c for c in required if c not in frame.columns]
    for column in missing:
        log.add(file, None, column, f"required column is missing (found: {', '.join(c for c in frame.columns if c != ROW)})")
    return not missing


def cast_checked(frame: pl.DataFrame, column: str, dtype: pl.DataType, file: Path | str, log: ProblemLog,
                 nullable: bool = False, max_reports: int = 20) -> pl.DataFrame:
    """Cast one column, logging each row whose value is not a valid `dtype` (or is empty)."""
    source = frame[column]
    if source.dtype == dtype:
        cast = source
    elif dtype.is_integer():
        # "881250949.0" is a valid integer timestamp (RecBole writes floats); "3.5" is not.
        as_float = source.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        whole = as_float.is_not_null() & (as_float == as_float.floor())
        cast = pl.select(pl.when(whole).then(as_float).otherwise(None).cast(dtype, strict=False)).to_series()
    else:
        as_text = source.cast(pl.String) if source.dtype != pl.String else source
        cast = as_text.str.strip_chars().cast(dtype, strict=False) if dtype != pl.String else as_text
    bad = source.is_not_null() & cast.is_null()
    if not nullable:
        bad = bad | source.is_null()
    if bad.any():
        rows = frame.filter(bad)
        for row, value in zip(rows[ROW].to_list()[:max_reports], rows[column].to_list()[:max_reports]):
            what = "is empty" if value is None else f"value {value!r} is not a valid {dtype}"
            log.add(file, row, column, what)
        if rows.height > max_reports:
            log.add(file, None, column, f"... {rows.height - max_reports} more invalid value(s) in this column")
    return frame.with_columns(cast.alias(column))


def check_unique(frame: pl.DataFrame, column: str, file: Path | str, log: ProblemLog) -> None:
    dup = frame.filter(pl.col(column).is_duplicated() & pl.col(column).is_not_null())
    first_seen: dict[str, int] = {}
    for row, value in zip(dup[ROW].to_list(), dup[column].to_list()):
        if value in first_seen:
            log.add(file, row, column, f"duplicate id {value!r} (first at row {first_seen[value]})")
        else:
            first_seen[value] = row


def check_features(medium: str, array: np.ndarray, n_items: int, file: Path | str, log: ProblemLog) -> np.ndarray | None:
    """Features must be a 2-d finite matrix with one row per item (row i = item_index i)."""
    if array.dtype == object:
        lengths = {len(r) for r in array}
        log.add(file, None, medium, f"ragged feature vectors: row lengths {sorted(lengths)[:5]}")
        return None
    if array.ndim != 2:
        log.add(file, None, medium, f"expected a 2-d (items x dims) array, got shape {array.shape}")
        return None
    if array.shape[0] != n_items:
        log.add(file, None, medium, f"has {array.shape[0]} rows but the dataset has {n_items} items")
        return None
    finite = np.isfinite(array.astype(np.float32, copy=False))
    if not finite.all():
        bad_rows = np.nonzero(~finite.all(axis=1))[0]
        for r in bad_rows[:20]:
            col = int(np.nonzero(~finite[r])[0][0])
            log.add(file, int(r) + 1, f"{medium}[{col}]", "NaN or infinite value in feature vector")
        if len(bad_rows) > 20:
            log.add(file, None, medium, f"... {len(bad_rows) - 20} more row(s) with NaN/inf")
        return None
    return np.ascontiguousarray(array, dtype=np.float32)


def assemble(name: str, items: pl.DataFrame, items_file: Path | str, interactions: pl.DataFrame,
             interactions_file: Path | str, log: ProblemLog, features: dict[str, tuple[np.ndarray, Path | str]] | None = None,
             users: pl.DataFrame | None = None, timestamps_synthetic: bool = False) -> Dataset:
    """Validate typed raw tables and build the `Dataset` (indices, media, features).

    `items` needs `item_id` (+ optional title/text/image_uri/audio_uri); `interactions` needs
    `user_id`, `item_id`, `timestamp` (+ optional event_type, weight, split). Both carry `_row`.
    Raises `DataValidationError` listing every problem found.
    """
    features = features or {}
    structural = [c for c, f in (("item_id", items), ("user_id", interactions), ("item_id", interactions)) if c not in f.columns]
    if structural:  # nothing below can run without the id columns; report what we have
        for medium, (array, file) in features.items():
            check_features(medium, array, items.height, file, log)
        log.raise_if_any()
    check_unique(items, "item_id", items_file, log)
    known = set(items["item_id"].to_list())
    unknown = interactions.filter(~pl.col("item_id").is_in(list(known)) & pl.col("item_id").is_not_null())
    for row, value in zip(unknown[ROW].to_list()[:20], unknown["item_id"].to_list()[:20]):
        log.add(interactions_file, row, "item_id", f"unknown item {value!r} (not in {Path(str(items_file)).name})")
    if unknown.height > 20:
        log.add(interactions_file, None, "item_id", f"... {unknown.height - 20} more interaction(s) with unknown items")
    if "split" in interactions.columns:
        bad = interactions.filter(~pl.col("split").is_in(["train", "valid", "test"]))
        for row, value in zip(bad[ROW].to_list()[:20], bad["split"].to_list()[:20]):
            log.add(interactions_file, row, "split", f"split {value!r} is not one of train/valid/test")
    n_items = items.height
    checked: dict[str, np.ndarray] = {}
    for medium, (array, file) in features.items():
        ok = check_features(medium, array, n_items, file, log)
        if ok is not None:
            checked[medium] = ok
    log.raise_if_any()

    for column in ("title", "text", "image_uri", "audio_uri"):
        if column not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    items = items.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("item_index"))
    mask = {m: np.zeros(n_items, dtype=bool) for m in MEDIA}
    mask["text"] |= items["text"].is_not_null().to_numpy()
    mask["image"] |= items["image_uri"].is_not_null().to_numpy()
    mask["audio"] |= items["audio_uri"].is_not_null().to_numpy()
    for medium, array in checked.items():
        mask[medium] |= np.abs(array).sum(axis=1) > 0
    media_lists = [[m for m in MEDIA if mask[m][i]] for i in range(n_items)]
    items = items.with_columns(pl.Series("media", media_lists, dtype=pl.List(pl.String)))
    items = items.select("item_id", "item_index", "media", "title", "text", "image_uri", "audio_uri")

    if "event_type" not in interactions.columns:
        interactions = interactions.with_columns(pl.lit("interaction").alias("event_type"))
    if "weight" not in interactions.columns:
        interactions = interactions.with_columns(pl.lit(1.0, dtype=pl.Float32).alias("weight"))
    index_of = items.select("item_id", "item_index")
    interactions = interactions.join(index_of, on="item_id", how="left")
    user_order = interactions.group_by("user_id").agg(pl.col(ROW).min().alias("_first")).sort("_first")
    user_order = user_order.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("user_index")).drop("_first")
    interactions = interactions.join(user_order, on="user_id", how="left")
    keep = ["user_id", "item_id", "user_index", "item_index", "timestamp", "event_type", "weight"]
    if "split" in interactions.columns:
        keep.append("split")
    interactions = interactions.sort(ROW).select(keep).with_columns(pl.col("weight").cast(pl.Float32))
    return Dataset(
        name=name, items=items, interactions=interactions,
        item_features={m: a for m, a in checked.items()},
        feature_mask={m: mask[m] for m in MEDIA if mask[m].any()},
        users=users.drop(ROW) if users is not None and ROW in users.columns else users,
        timestamps_synthetic=timestamps_synthetic,
        source_files=tuple(str(f) for f in (items_file, interactions_file, *[f for _, f in features.values()])),
    )
