"""Vectors computed outside this project (TikTok's image_feat.npy / audio_feat.npy) behind the
same `ContentEncoder` interface, so the embed job and training treat them like any other medium.

The "content" of a precomputed vector is the item itself: inputs are item ids (str) or item
indices (int). There is no way to embed a new query image into such a space, which is why the
search endpoint can only use media that have a model-backed encoder.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.encoders.base import ContentEncoder, EncoderInputError, check_output, l2_normalize, slug
from recsys.encoders.specs import PrecomputedSpec


class PrecomputedEncoder(ContentEncoder):
    """Looks vectors up by item.

    Args:
        medium: the medium these vectors describe.
        spec: the table, the id of each row, an optional mask of rows that hold a real vector.

    Example::

        enc = PrecomputedEncoder("image", PrecomputedSpec(ds.item_features["image"], tuple(ds.item_ids)))
        enc.encode(["0", "1"])  # (2, 128)
    """

    def __init__(self, medium: str, spec: PrecomputedSpec) -> None:
        table = np.asarray(spec.table)
        assert table.ndim == 2, f"precomputed table must be 2-d (items x dims), got shape {table.shape}"
        assert len(spec.item_ids) == table.shape[0], (
            f"precomputed table has {table.shape[0]} rows but {len(spec.item_ids)} item ids")
        self.medium = medium
        self.spec = spec
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.mask = np.ones(table.shape[0], dtype=bool) if spec.mask is None else np.asarray(spec.mask, dtype=bool)
        self.row_of = {item_id: i for i, item_id in enumerate(spec.item_ids)}
        self.dim = int(table.shape[1])
        self.normalized = spec.normalize
        digest = hashlib.sha256(self.table.tobytes()).hexdigest()[:10]
        self.version = slug(f"{medium}-precomputed-{spec.source}-{digest}-d{self.dim}"
                            f"-{'l2' if spec.normalize else 'raw'}")

    def prepare(self, source: Any) -> int:
        """Row of an item id (str) or item index (int); `EncoderInputError` if unknown or masked out."""
        if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
            row = int(source)
            if not 0 <= row < self.table.shape[0]:
                raise EncoderInputError(f"item index {row} is out of range 0..{self.table.shape[0] - 1}")
        elif isinstance(source, str):
            if source not in self.row_of:
                raise EncoderInputError(f"unknown item id {source!r}")
            row = self.row_of[source]
        else:
            raise EncoderInputError(f"precomputed {self.medium} vectors are looked up by item id or index, "
                                    f"got {type(source).__name__}")
        if not self.mask[row]:
            raise EncoderInputError(f"item has no precomputed {self.medium} vector")
        return row

    def encode_prepared(self, items: Sequence[int]) -> np.ndarray:
        vectors = self.table[np.asarray(items, dtype=np.int64)] if items else np.zeros((0, self.dim), np.float32)
        if self.spec.normalize:
            vectors = l2_normalize(vectors)
        return check_output(vectors, len(items), self.dim, self.version)
