"""Offline store: Parquet feature tables for training, and the point-in-time join that reads them.

Tables live at ``<root>/<dataset name>/<dataset version>/<view>-v<version>-<params>.parquet``:
new data (a different `Dataset.version`) or a new feature definition never overwrites features a
model was trained on. Files are written to a temporary name and renamed, so a reader never sees
half a table.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import polars as pl

from feature_store.definitions import (HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS, HISTORY_COLUMNS, USER_HISTORY,
                                       feature_inputs)
from recsys.config import get_settings
from recsys.data.schema import Dataset

log = logging.getLogger(__name__)

TRAINING_EVENTS = "training_events"


class MissingFeaturesError(FileNotFoundError):
    """A feature table was asked for before any job materialised it."""


class OfflineStore:
    """Versioned Parquet tables of one dataset version.

    Args:
        dataset_name: e.g. ``ml-100k``.
        dataset_version: `Dataset.version` (content hash of the data).
        root: defaults to ``<RECSYS_STORE_DIR>/offline``.
    """

    def __init__(self, dataset_name: str, dataset_version: str, root: Path | None = None) -> None:
        self.dataset_name = dataset_name
        self.dataset_version = dataset_version
        self.root = Path(root) if root is not None else get_settings().store_dir / "offline"

    @property
    def folder(self) -> Path:
        return self.root / self.dataset_name / self.dataset_version

    def path(self, table_name: str) -> Path:
        return self.folder / f"{table_name}.parquet"

    def write(self, frame: pl.DataFrame, table_name: str) -> Path:
        """Write atomically (temp file + rename); returns the table's path."""
        path = self.path(table_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        frame.write_parquet(tmp, statistics=True)
        os.replace(tmp, path)
        log.info("offline table %s: %d rows -> %s", table_name, frame.height, path)
        return path

    def scan(self, table_name: str) -> pl.LazyFrame:
        path = self.path(table_name)
        if not path.exists():
            have = sorted(p.stem for p in self.folder.glob("*.parquet")) if self.folder.exists() else []
            raise MissingFeaturesError(
                f"no offline table '{table_name}' for dataset {self.dataset_name} version {self.dataset_version} "
                f"(looked for {path}; tables there: {have or 'none'}). "
                f"Run `recsys features materialize --dataset {self.dataset_name}` with the same options.")
        return pl.scan_parquet(path)


def point_in_time_join(entities: pl.DataFrame | pl.LazyFrame, snapshots: pl.DataFrame | pl.LazyFrame,
                       timestamp: str = "timestamp") -> pl.DataFrame:
    """Attach to each (user_id, timestamp) row the user's history from events strictly before it.

    `snapshots` is a `user_history` table (state *through* each timestamp); taking the latest
    snapshot with snapshot time < query time (``allow_exact_matches=False``) is what makes equal
    timestamps "not earlier". Rows keep their input order (existing ``hist_*`` columns are
    replaced); users with no earlier event get empty lists and a count of 0.

    Only keys go through the as-of join; the history lists are then gathered once by row number
    (a sentinel empty row stands for "no earlier snapshot"), which is several times cheaper than
    sorting and joining the list columns themselves.
    """
    entities = entities.collect() if isinstance(entities, pl.LazyFrame) else entities
    _require_columns(entities.lazy(), ("user_id", timestamp), "entity frame")
    entities = entities.drop(HISTORY_COLUMNS, strict=False)
    # Row-group pruning on the user-sorted Parquet file when only a few users are asked for.
    history = (snapshots.lazy().filter(pl.col("user_id").is_in(entities.get_column("user_id").unique().implode()))
               .select("user_id", "timestamp", *HISTORY_COLUMNS).collect())
    keys = history.lazy().select("user_id", pl.col("timestamp").alias("_snapshot_ts")).with_row_index("_snapshot")
    matched = (
        entities.lazy().select("user_id", pl.col(timestamp).cast(pl.Int64).alias("_query_ts")).with_row_index("_row")
        .sort("_query_ts")
        .join_asof(keys.sort("_snapshot_ts"), left_on="_query_ts", right_on="_snapshot_ts", by="user_id",
                   strategy="backward", allow_exact_matches=False, check_sortedness=False)
        .sort("_row")
        .select(pl.col("_snapshot").fill_null(history.height))
        .collect()
    )
    features = history.select(HISTORY_COLUMNS)
    no_history = pl.DataFrame({HIST_ITEMS: [[]], HIST_TIMESTAMPS: [[]], HIST_COUNT: [0]}, schema=features.schema)
    return entities.hstack(pl.concat([features, no_history])[matched["_snapshot"]])


def get_historical_features(entity_df: pl.DataFrame | pl.LazyFrame, dataset: Dataset, history_cap: int | None = None,
                            root: Path | None = None) -> pl.DataFrame:
    """Point-in-time user history for arbitrary (user_id, timestamp) rows, read from Parquet.

    Args:
        entity_df: at least ``user_id`` (the dataset's string ids) and ``timestamp`` (integer,
            same unit as the interactions); other columns pass through, row order is kept.
        dataset: the dataset whose materialised features to read (its `version` picks the files).
        history_cap: the cap the features were materialised with (default: settings).
        root: offline store root (default: ``<RECSYS_STORE_DIR>/offline``).

    Raises:
        MissingFeaturesError: nothing was materialised for this dataset version and cap.
    """
    entities = entity_df.lazy() if isinstance(entity_df, pl.DataFrame) else entity_df
    _require_columns(entities, ("user_id", "timestamp"), "entity_df")
    schema = entities.collect_schema()
    if schema["user_id"] != pl.String:
        raise TypeError(f"entity_df.user_id must be the dataset's string ids (pl.String), got {schema['user_id']}")
    if not schema["timestamp"].is_integer():
        raise TypeError(f"entity_df.timestamp must be an integer type (same unit as the interactions), "
                        f"got {schema['timestamp']}")
    store = OfflineStore(dataset.name, dataset.version, root)
    history = store.scan(USER_HISTORY.table_name(feature_inputs(dataset, history_cap)))
    return point_in_time_join(entities, history)


def scan_training_events(dataset: Dataset, history_cap: int | None = None,
                         root: Path | None = None) -> pl.LazyFrame:
    """The materialised training table: every interaction of `dataset` with its point-in-time history."""
    history_table = USER_HISTORY.table_name(feature_inputs(dataset, history_cap))
    return OfflineStore(dataset.name, dataset.version, root).scan(training_events_name(history_table))


def training_events_name(history_table: str) -> str:
    """The per-interaction table is named after the history table it was joined with."""
    return f"{TRAINING_EVENTS}-{history_table}"


def _require_columns(frame: pl.LazyFrame, columns: tuple[str, ...], what: str) -> None:
    have = frame.collect_schema().names()
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {have}")
