"""The served-events table of the offline store, and its fold into the interactions the next run trains on.

The feed API accepts events (`POST /events`), appends them to the online history at once and flushes them
to Parquet (`serving.event_archive`), under the dataset and data version of the model that accepted them::

    <offline root>/<dataset>/<data version>/serving_events/part-<first stream id>-<consumer>.parquet

This module owns that table: where it lives, how it is read (once per `event_id`, in stream order), and how a
prefix of it joins a dataset (`fold_served_events`). Why the fold: without it, what users did with the feed
never reached training, so an item added live stayed cold in every retrained run however often it was
clicked. Folded events are interactions like the dataset's own (implicit positives, weight 1; `event_type`
kept), after the dataset's events in time:

- a user the dataset does not know gets the next user index (users who arrived while serving);
- an event on an item that is neither in the dataset nor in the folded catalogue log is skipped and counted
  (it cannot be trained on: there is no row for it);
- with a predefined split (TikTok) they are `train` rows; on a time-ordered split (leave-last-out, temporal)
  the split is applied afterwards, so a user's newest events are held out, as point-in-time evaluation wants.

A run records the folded prefix (`served_events` in run.json: events, last stream id, digest), so
`recsys evaluate` folds the same prefix and a run is never compared with data it did not see.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl

from feature_store.offline import OfflineStore

TABLE = "serving_events"
SCHEMA = {"event_id": pl.String, "user_id": pl.String, "item_id": pl.String, "event_type": pl.String,
          "ts": pl.Float64, "received_at": pl.Float64, "model_version": pl.String, "stream_id": pl.String}


def events_folder(root: Path, dataset: str, data_version: str) -> Path:
    """Where the events of a dataset version live, always inside `root`.

    A run of a folder dataset names it by the folder's absolute path (run.json `dataset`); joined onto `root`
    as is, that path replaced the root and the flusher wrote into the user's dataset folder. Such a dataset is
    filed under a name made from the folder's name and a digest of its path instead."""
    if Path(dataset).is_absolute():
        dataset = f"{Path(dataset).name}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"
    return OfflineStore(dataset, data_version, root).folder / TABLE


def read_events(root: Path, dataset: str, data_version: str) -> pl.DataFrame:
    """Every flushed event of a dataset version, once per `event_id`, in stream order."""
    return read_events_folder(events_folder(root, dataset, data_version))


def read_events_folder(folder: Path) -> pl.DataFrame:
    """`read_events` of one `serving_events` folder."""
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    frame = pl.concat([pl.read_parquet(p) for p in parts], how="vertical")
    order = pl.col("stream_id").str.split("-")  # "<ms>-<seq>": numeric order, not string order
    return (frame.sort(order.list.get(0).cast(pl.Int64), order.list.get(1).cast(pl.Int64))
            .unique("event_id", keep="first", maintain_order=True))


def events_digest(events: pl.DataFrame) -> str:
    """Identity of a prefix of the table: its event ids in stream order."""
    return hashlib.sha256("\n".join(events["event_id"].to_list()).encode()).hexdigest()[:16]


@dataclass
class ServedEventsFold:
    """What was folded: the table's first `events` rows (up to `last_stream_id`), and what came of them."""

    folder: str
    events: int
    last_stream_id: str
    digest: str
    interactions: int = 0                  # rows added to the dataset
    new_users: int = 0
    skipped_unknown_items: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"folder": self.folder, "events": self.events, "last_stream_id": self.last_stream_id,
                "digest": self.digest, "interactions": self.interactions, "new_users": self.new_users,
                "skipped_unknown_items": self.skipped_unknown_items}

    def summary(self) -> str:
        skipped = (f", {self.skipped_unknown_items} skipped (items the catalogue never had, e.g. "
                   f"{', '.join(self.skipped_examples)})" if self.skipped_unknown_items else "")
        return (f"served events: {self.interactions} of {self.events} folded into train interactions "
                f"({self.new_users} new users){skipped}, from {self.folder}")


def fold_served_events(ds: Any, events: pl.DataFrame, folder: str) -> tuple[Any, ServedEventsFold]:
    """`ds` (a `recsys.data.Dataset`, catalogue log already folded) with `events` appended as interactions."""
    fold = ServedEventsFold(folder, events.height, events["stream_id"][-1] if events.height else "",
                            events_digest(events))
    if not events.height:
        return ds, fold
    inter = ds.interactions
    items = ds.items.select("item_id", pl.col("item_index").cast(inter.schema["item_index"]))
    known = events.join(items, on="item_id", how="inner", maintain_order="left")
    unknown = events.filter(~pl.col("item_id").is_in(items["item_id"].implode()))
    fold.skipped_unknown_items = unknown.height
    fold.skipped_examples = unknown["item_id"].unique(maintain_order=True).head(3).to_list()
    users = inter.select("user_id", "user_index").unique("user_id")
    new_ids = (known.filter(~pl.col("user_id").is_in(users["user_id"].implode()))["user_id"]
               .unique(maintain_order=True))
    fold.new_users = new_ids.len()
    users = pl.concat([users, pl.DataFrame({"user_id": new_ids, "user_index": pl.int_range(
        ds.n_users, ds.n_users + new_ids.len(), eager=True).cast(inter.schema["user_index"])})])
    start = int(inter["timestamp"].max()) + 1 if inter.height else 0
    rows = (known.join(users, on="user_id", how="left", maintain_order="left")
            .with_row_index("_order")
            # its own time where that is after the dataset's events, never before them or an earlier event (the
            # dataset's clock may be synthetic, TikTok's is the row order; a client's clock may lag)
            .with_columns(pl.max_horizontal(pl.col("_order").cast(pl.Int64) + start, pl.col("ts").cast(pl.Int64))
                          .cum_max().alias("timestamp"),
                          pl.lit(1.0, pl.Float32).alias("weight")))
    if "split" in inter.columns:
        rows = rows.with_columns(pl.lit("train").alias("split"))
    added = rows.select([pl.col(c).cast(inter.schema[c]) for c in inter.columns])
    fold.interactions = added.height
    return replace(ds, interactions=pl.concat([inter, added])), fold
