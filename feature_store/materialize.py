"""The materialisation job: compute features once, write them offline (Parquet) and online (Redis).

Both stores are written from the same collected frames, so the history a model was trained with
for "now" is, key by key, the history serving reads: the online store holds each user's latest
`user_history` snapshot, the offline store holds every snapshot plus the per-interaction
training table derived from them.

Large datasets (more than `stream_rows`, 2M, interactions) are materialised in user buckets
(`write_offline_streaming`): contiguous ranges of sorted user ids, each computed by the same
pipelines and appended to the same Parquet files as row groups, so memory is bounded by a bucket
(the snapshot and training tables hold up to `history_cap` items per row: ~0.7 KB a row at cap 50,
~17 GB for 10M interactions held at once). Readers get the same tables, row for row.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import redis

from feature_store.definitions import ITEM_FEATURES, USER_HISTORY, FeatureInputs, feature_inputs
from feature_store.offline import OfflineStore, point_in_time_join, training_events_name

STREAM_ROWS = 2_000_000  # above this many interactions, materialisation streams in user buckets
BUCKET_ROWS = 500_000  # interactions per bucket: ~2 GB peak at cap 50 (2M-row buckets peaked at 7 GB)
from feature_store.publish import PublishResult, publish_version
from recsys.config import get_settings
from recsys.data import Dataset, load_dataset
from recsys.data.splits import TIME_ORDERED, apply_split, known_before

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureFrames:
    """Features computed once by a job; every store is written from these frames.

    Attributes:
        user_history: `USER_HISTORY` snapshots, one row per (user_id, distinct timestamp).
        training_events: each interaction with the history of strictly earlier events.
        item_features: `ITEM_FEATURES`, one row per item.
    """

    inputs: FeatureInputs
    user_history: pl.DataFrame
    training_events: pl.DataFrame
    item_features: pl.DataFrame

    def latest_user_history(self) -> pl.DataFrame:
        """Each user's last snapshot: the history as of after their newest event (what serving reads)."""
        return self.user_history.filter(pl.col("timestamp") == pl.col("timestamp").max().over("user_id"))


@dataclass
class MaterializeReport:
    dataset: str
    dataset_version: str
    history_cap: int
    interactions: int
    offline_tables: dict[str, Path]
    online: PublishResult | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def compute_features(inputs: FeatureInputs) -> FeatureFrames:
    """Run the feature pipelines (polars, lazy, collected once per table)."""
    user_history = USER_HISTORY.build(inputs).collect()
    training_events = point_in_time_join(inputs.interactions, user_history)
    item_features = ITEM_FEATURES.build(inputs).collect()
    return FeatureFrames(inputs, user_history, training_events, item_features)


def write_offline(frames: FeatureFrames, store: OfflineStore) -> dict[str, Path]:
    """Write the three tables under the store's dataset version; returns name -> path."""
    history = USER_HISTORY.table_name(frames.inputs)
    tables = {
        history: frames.user_history,
        training_events_name(history): frames.training_events,
        ITEM_FEATURES.table_name(frames.inputs): frames.item_features,
    }
    return {name: store.write(frame, name) for name, frame in tables.items()}


def user_buckets(interactions: pl.LazyFrame, bucket_rows: int) -> list[tuple[str, str]]:
    """Contiguous (first, last) ranges of sorted user ids holding about `bucket_rows` interactions
    each (a user is never split: all of a user's events are in one bucket)."""
    counts = (interactions.group_by("user_id").len().sort("user_id")
              .with_columns(bucket=(pl.col("len").cum_sum() - pl.col("len")) // max(1, bucket_rows))
              .group_by("bucket").agg(pl.col("user_id").first().alias("first"), pl.col("user_id").last().alias("last"))
              .sort("bucket").collect(engine="streaming"))
    return list(zip(counts["first"].to_list(), counts["last"].to_list()))


class _PartWriter:
    """Appends frames to one Parquet file as row groups (temp name, renamed by `close`)."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq  # noqa: PLC0415

        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pq, self._writer, self.rows = pq, None, 0

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self._writer is None:
            self._writer = self._pq.ParquetWriter(self.tmp, table.schema, compression="zstd", write_statistics=True)
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += frame.height

    def close(self) -> Path:
        self._writer.close()
        os.replace(self.tmp, self.path)
        log.info("offline table %s: %d rows -> %s (streamed)", self.path.stem, self.rows, self.path)
        return self.path


def write_offline_streaming(inputs: FeatureInputs, store: OfflineStore, bucket_rows: int = BUCKET_ROWS,
                            seconds: dict[str, float] | None = None) -> tuple[dict[str, Path], pl.DataFrame, pl.DataFrame]:
    """`compute_features` + `write_offline` in user buckets; returns (tables, each user's latest
    history snapshot, item features): what `publish_version` needs.

    The snapshot table is sorted by (user_id, timestamp) and buckets are ascending user ranges, so
    appending them reproduces it. The training table keeps the interactions' input order: each
    bucket's rows are cut by input row number into chunks of 2 x `bucket_rows` rows, kept as
    temporary files per chunk, and each chunk is then read back once, sorted and appended.
    """
    seconds = seconds if seconds is not None else {}
    compute_s = write_s = 0.0
    history_name = USER_HISTORY.table_name(inputs)
    events_name = training_events_name(history_name)
    numbered = inputs.interactions.with_row_index("_row")
    history_out = _PartWriter(store.path(history_name))
    parts_dir = store.folder / f".{events_name}.{os.getpid()}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    latest = []
    merge_rows = 2 * bucket_rows  # input rows per chunk of the final training table
    buckets = user_buckets(inputs.interactions, bucket_rows)
    try:
        for number, (first, last) in enumerate(buckets):
            started = time.perf_counter()
            rows = numbered.filter(pl.col("user_id").is_between(pl.lit(first), pl.lit(last))).collect()
            bucket = dataclasses.replace(inputs, interactions=rows.lazy().drop("_row"))
            snapshots = USER_HISTORY.build(bucket).collect()
            events = point_in_time_join(rows, snapshots).sort("_row")
            latest.append(FeatureFrames(bucket, snapshots, events, pl.DataFrame()).latest_user_history())
            compute_s += time.perf_counter() - started
            started = time.perf_counter()
            history_out.write(snapshots)
            # this bucket's rows, split by input-row chunk: chunk c of the final table is then the
            # concatenation of every bucket's piece c (each row is read back exactly once)
            for (chunk,), piece in events.with_columns((pl.col("_row") // merge_rows).alias("_chunk")).partition_by(
                    "_chunk", as_dict=True, include_key=False).items():
                folder = parts_dir / f"{chunk:06d}"
                folder.mkdir(exist_ok=True)
                piece.write_parquet(folder / f"{number:05d}.parquet", statistics=False)
            write_s += time.perf_counter() - started
            log.info("materialise: bucket %d/%d (%d interactions) done, %.0f s so far, peak RSS %.0f MB", number + 1,
                     len(buckets), rows.height, compute_s + write_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            del rows, snapshots, events
        started = time.perf_counter()
        tables = {history_name: history_out.close()}
        events_out = _PartWriter(store.path(events_name))
        for folder in sorted(parts_dir.iterdir()):
            events_out.write(pl.read_parquet(sorted(folder.glob("*.parquet"))).sort("_row").drop("_row"))
            shutil.rmtree(folder)
        tables[events_name] = events_out.close()
        write_s += time.perf_counter() - started
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    started = time.perf_counter()
    item_name = ITEM_FEATURES.table_name(inputs)
    item_features = ITEM_FEATURES.build(inputs).collect()
    tables[item_name] = store.write(item_features, item_name)
    seconds["compute"] = compute_s + time.perf_counter() - started
    seconds["offline_write"] = write_s
    return tables, pl.concat(latest), item_features


def load_item_vectors(path: Path, n_items: int) -> np.ndarray:
    """Read a (n_items, dim) .npy of item vectors (row i = item_index i) and check it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"item vectors file {path} does not exist")
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a plain .npy array (pickled objects are refused): {err}") from err
    if vectors.ndim != 2 or vectors.shape[0] != n_items:
        raise ValueError(f"{path}: expected shape (n_items={n_items}, dim), row i = item_index i; got {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got dtype {vectors.dtype}")
    vectors = vectors.astype(np.float32, copy=False)
    if not np.isfinite(vectors).all():
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise ValueError(f"{path}: {bad.size} row(s) contain NaN/inf, first item_index {bad[:5].tolist()}")
    return vectors


def _known_label(held_out: str, strategy: str) -> str:
    return "train+valid" if held_out == "test" and strategy in TIME_ORDERED else "train"


def known_rows(dataset: Dataset, strategy: str, held_out: str = "valid") -> Dataset:
    """`dataset` with only the rows a feed has read when the `held_out` split's events happen, under split
    `strategy` (the split training applies): the train rows, plus the valid rows for `test` on a
    time-ordered split (`recsys.data.splits.known_before`, the evaluation harness's rule)."""
    if strategy == "predefined" and "split" not in dataset.interactions.columns:
        raise ValueError(f"dataset {dataset.name} has no predefined split; use --train-split leave-last-out or temporal")
    if strategy not in ("predefined", "leave-last-out", "temporal"):
        raise ValueError(f"unknown split strategy {strategy!r}: use predefined, leave-last-out or temporal")
    split = apply_split(dataset, strategy)
    return dataclasses.replace(split, interactions=known_before(split, held_out, strategy))


def materialize(dataset: Dataset | str, *, history_cap: int | None = None,
                item_vectors: np.ndarray | Path | None = None, client: redis.Redis | None = None,
                namespace: str | None = None, offline_root: Path | None = None, offline_only: bool = False,
                batch_size: int = 1000, progress: bool = True, train_split: str | None = None,
                held_out: str = "valid", stream_rows: int = STREAM_ROWS, bucket_rows: int = BUCKET_ROWS) -> MaterializeReport:
    """Compute features for `dataset`, write the offline tables, then publish a new online version.

    Args:
        dataset: a loaded `Dataset` or a registered name / folder for `load_dataset`.
        history_cap: history length kept (default RECSYS_ONLINE_HISTORY_CAP).
        item_vectors: (n_items, dim) array or .npy path, row i = item_index i; optional.
        client: Redis client (default: `connect_redis()`); unused with `offline_only`.
        namespace: Redis key namespace (default RECSYS_REDIS_NAMESPACE).
        train_split: materialise only the ``train`` rows of this split strategy (``predefined``,
            ``leave-last-out``, ``temporal``): the store then holds exactly the histories a run
            trained with that split saw (the train/serve parity check, or serving "as of training").
            The recorded ``dataset_version`` stays the full dataset's, as runs record it.
        held_out: with `train_split`, the rows known when this split is ranked: ``valid`` (default) the
            train rows; ``test`` on leave-last-out or temporal also the valid rows (what the evaluation
            harness ranks test users from, `recsys.data.splits.known_before`).
        stream_rows: above this many interactions, compute and write in user buckets of about
            `bucket_rows` interactions (`write_offline_streaming`; same tables, bounded memory).
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    source_version = ds.version
    if train_split is not None:
        ds = known_rows(ds, train_split, held_out)
    if isinstance(item_vectors, (str, Path)):
        item_vectors = load_item_vectors(Path(item_vectors), ds.n_items)
    inputs = feature_inputs(ds, history_cap, item_vectors)
    lap("load")
    log.info("computing features for %s (version %s, %d interactions, history cap %d)", ds.name, ds.version,
             ds.interactions.height, inputs.history_cap)
    store = OfflineStore(ds.name, ds.version, offline_root)
    if ds.interactions.height > stream_rows:
        tables, latest_history, item_features = write_offline_streaming(inputs, store, bucket_rows, seconds)
        clock = time.perf_counter()
    else:
        frames = compute_features(inputs)
        lap("compute")
        tables = write_offline(frames, store)
        lap("offline_write")
        latest_history, item_features = frames.latest_user_history(), frames.item_features
    online = None
    if not offline_only:
        if client is None:
            from feature_store.redis_server import connect_redis  # noqa: PLC0415 - offline runs need no Redis
            client = connect_redis()
        meta = {"dataset": ds.name, "dataset_version": source_version, "history_cap": inputs.history_cap,
                "feature_definition": f"{USER_HISTORY.name}-v{USER_HISTORY.version}",
                "split": f"{_known_label(held_out, train_split)}:{train_split}" if train_split else "all", "feature_tables": ",".join(tables)}
        online = publish_version(client, namespace or get_settings().redis_namespace,
                                 users=latest_history, items=item_features, meta=meta,
                                 batch_size=batch_size, progress=progress)
        lap("online_write")
    return MaterializeReport(ds.name, source_version, inputs.history_cap, ds.interactions.height, tables, online, seconds)
