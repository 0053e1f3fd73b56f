"""Canonical item and interaction tables that every adapter produces and every job consumes.

Ids stay the dataset's own strings (`user_id`, `item_id`) so the API speaks the user's language;
dense `*_index` columns (0..n-1) exist for embedding tables and matrices.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import polars as pl


class Medium(str, Enum):
    """The content media an item can carry."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"


MEDIA: tuple[str, ...] = tuple(m.value for m in Medium)

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "item_index": pl.Int32(),
    "media": pl.List(pl.String()),
    "title": pl.String(),
    "text": pl.String(),
    "image_uri": pl.String(),
    "audio_uri": pl.String(),
}

INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "user_index": pl.Int32(),
    "item_index": pl.Int32(),
    "timestamp": pl.Int64(),
    "event_type": pl.String(),
    "weight": pl.Float32(),
}

SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    """A loaded, validated dataset.

    Attributes:
        name: registry name (e.g. ``tiktok``) or the folder it came from.
        items: one row per item, columns of ``ITEM_SCHEMA``, sorted by ``item_index``.
        interactions: columns of ``INTERACTION_SCHEMA`` plus ``split`` when the source has one.
        item_features: medium -> float32 array (n_items, d), row i = item_index i; rows of items
            without that medium are zeros and ``feature_mask[medium][i]`` is False.
        timestamps_synthetic: True when the source has no time (TikTok): ``timestamp`` is then the
            row order of the source file, which keeps "earlier" well defined but is not wall time.
    """

    name: str
    items: pl.DataFrame
    interactions: pl.DataFrame
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_mask: dict[str, np.ndarray] = field(default_factory=dict)
    users: pl.DataFrame | None = None
    timestamps_synthetic: bool = False
    source_files: tuple[str, ...] = ()

    @property
    def n_items(self) -> int:
        return self.items.height

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_index"].max()) + 1 if self.interactions.height else 0

    @property
    def user_ids(self) -> list[str]:
        """user_id by user_index."""
        return (
            self.interactions.select("user_index", "user_id").unique("user_index").sort("user_index")["user_id"].to_list()
        )

    @property
    def item_ids(self) -> list[str]:
        return self.items["item_id"].to_list()

    @property
    def version(self) -> str:
        """Content hash of the tables and features: names the data a model was trained on."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        for frame in (self.items.select(sorted(self.items.columns)), self.interactions):
            h.update(frame.hash_rows(seed=0).to_numpy().tobytes())
        for medium in sorted(self.item_features):
            h.update(medium.encode())
            h.update(np.ascontiguousarray(self.item_features[medium]).tobytes())
        return h.hexdigest()[:16]

    def split(self, name: str) -> pl.DataFrame:
        assert "split" in self.interactions.columns, f"dataset {self.name} has no split column; call a splitter first"
        return self.interactions.filter(pl.col("split") == name)

    def item_media(self) -> list[list[str]]:
        return self.items["media"].to_list()
