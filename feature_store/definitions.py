"""Feature definitions as code: each view is a named, versioned polars pipeline over the dataset.

Training (offline Parquet, point-in-time joins) and serving (online Redis) both read tables built
by these pipelines, so a feature means the same thing in both places. Changing what a pipeline
computes means bumping its ``version``: tables are stored under the view's name, version and
parameters, so old and new features never mix.

User history semantics (the rule both stores follow):
    events of a user are ordered by (timestamp, item_index); the history *strictly before* time t
    holds the events with timestamp < t. Events with the same timestamp as t are NOT earlier:
    a batch of ratings saved in one second never sees itself. Lists are newest first and capped
    at ``history_cap`` items; ``hist_count`` counts every earlier event (not capped).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.config import get_settings
from recsys.data.schema import MEDIA, Dataset

HIST_ITEMS = "hist_item_ids"
HIST_TIMESTAMPS = "hist_timestamps"
HIST_COUNT = "hist_count"
HISTORY_COLUMNS = (HIST_ITEMS, HIST_TIMESTAMPS, HIST_COUNT)
VECTOR = "vector"
ITEM_METADATA_COLUMNS = ("item_id", "item_index", "title", "text", "media", "image_uri", "audio_uri")

# Rolling windows are defined by a duration; this one is longer than any int64 time span we
# store, so a window holds a user's whole past (the cap is applied by `tail`).
_WHOLE_PAST = f"{1 << 62}i"


@dataclass(frozen=True)
class FeatureInputs:
    """What a feature pipeline may read: the canonical tables plus job parameters."""

    interactions: pl.LazyFrame
    items: pl.LazyFrame
    history_cap: int
    item_features: dict[str, np.ndarray]
    item_vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.history_cap < 1:
            raise ValueError(f"history_cap must be >= 1, got {self.history_cap}")


def feature_inputs(dataset: Dataset, history_cap: int | None = None,
                   item_vectors: np.ndarray | None = None) -> FeatureInputs:
    """Inputs of the pipelines for `dataset`; the history cap defaults to RECSYS_ONLINE_HISTORY_CAP."""
    if item_vectors is not None and (item_vectors.ndim != 2 or item_vectors.shape[0] != dataset.n_items):
        raise ValueError(f"item vectors must have shape (n_items={dataset.n_items}, dim) with row i = item_index i, "
                         f"got {item_vectors.shape}")
    return FeatureInputs(
        interactions=dataset.interactions.lazy(),
        items=dataset.items.lazy(),
        history_cap=history_cap if history_cap is not None else get_settings().online_history_cap,
        item_features=dataset.item_features,
        item_vectors=item_vectors,
    )


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned feature table keyed by an entity (Feast's FeatureView, kept small).

    Args:
        name: table name in both stores.
        version: bump when `build` changes meaning; part of every offline table name (and of the
            `feature_tables` an online version records).
        entity: join key column (``user_id`` or ``item_id``).
        build: the polars pipeline producing the table from `FeatureInputs`.
        params_tag: the job parameters the table depends on, as a short path-safe string.
        timestamp_field: event-time column for point-in-time joins (None: not time-varying).

    Example::

        USER_HISTORY.build(inputs).collect()
    """

    name: str
    version: int
    entity: str
    build: Callable[[FeatureInputs], pl.LazyFrame]
    params_tag: Callable[[FeatureInputs], str]
    description: str
    timestamp_field: str | None = None

    def table_name(self, inputs: FeatureInputs) -> str:
        """Storage name: changes whenever the definition version or its parameters change."""
        return f"{self.name}-v{self.version}-{self.params_tag(inputs)}"


def user_history_snapshots(inputs: FeatureInputs) -> pl.LazyFrame:
    """Each user's history *through* each of their distinct timestamps (ties included).

    One row per (user_id, timestamp): the last `history_cap` items with timestamp <= that time.
    A point-in-time lookup for time t takes the latest snapshot strictly before t, which is
    exactly "events with timestamp < t" (see module docstring); the last snapshot of a user is
    what the online store serves.
    """
    cap = inputs.history_cap
    return (
        inputs.interactions.select("user_id", "item_id", "item_index", "timestamp")
        .sort("user_id", "timestamp", "item_index")
        # closed="right": the window of time t is (t - whole past, t], i.e. every event at or before t.
        .rolling("timestamp", period=_WHOLE_PAST, closed="right", group_by="user_id")
        .agg(
            pl.col("item_id").tail(cap).reverse().alias(HIST_ITEMS),
            pl.col("timestamp").tail(cap).reverse().alias(HIST_TIMESTAMPS),
            pl.len().cast(pl.Int64).alias(HIST_COUNT),
        )
        # Events sharing a timestamp share a window, so any one of their rows is the snapshot.
        .filter(pl.struct("user_id", "timestamp").is_last_distinct())
        .sort("user_id", "timestamp")
    )


def item_feature_table(inputs: FeatureInputs) -> pl.LazyFrame:
    """Item metadata, which media each item carries, the dataset's media features and (optional)
    the item vectors serving uses; one row per item, ordered by item_index."""
    items = inputs.items.select(*ITEM_METADATA_COLUMNS).sort("item_index")
    flags = [pl.col("media").list.contains(pl.lit(m)).alias(f"has_{m}") for m in MEDIA]
    arrays = [_array_column(f"{medium}_features", matrix) for medium, matrix in sorted(inputs.item_features.items())]
    if inputs.item_vectors is not None:
        arrays.append(_array_column(VECTOR, inputs.item_vectors))
    return items.with_columns(*flags, *arrays)


def _array_column(name: str, matrix: np.ndarray) -> pl.Series:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pl.Series(name, matrix, dtype=pl.Array(pl.Float32, matrix.shape[1]))


def vectors_digest(vectors: np.ndarray | None) -> str:
    """Short content hash naming a set of item vectors (or their absence) in storage paths."""
    if vectors is None:
        return "novec"
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(str(vectors.shape).encode() + vectors.tobytes()).hexdigest()[:10]
    return f"vec{vectors.shape[1]}-{digest}"


USER_HISTORY = FeatureView(
    name="user_history",
    version=1,
    entity="user_id",
    timestamp_field="timestamp",
    build=user_history_snapshots,
    params_tag=lambda inputs: f"cap{inputs.history_cap}",
    description="Last N items a user interacted with (+ timestamps, total count), point-in-time.",
)

ITEM_FEATURES = FeatureView(
    name="item_features",
    version=1,
    entity="item_id",
    build=item_feature_table,
    params_tag=lambda inputs: vectors_digest(inputs.item_vectors),
    description="Item metadata, media flags, media features and serving vectors.",
)
