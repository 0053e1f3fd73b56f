"""The live part of one model version's catalogue: items added or taken down since training.

Why an overlay and not writes into the FAISS index: the trained catalogue's index stays
immutable (built once, searched lock-free by every request), and the live items sit beside it in
an append-only matrix that is searched exactly (a few thousand rows cost microseconds, and exact
search cannot lose recall however many items arrive). Take-downs are tombstones on either part.

Readers never block: every write builds a new immutable `LiveSnapshot` (small copy-on-write
arrays; the vector rows themselves are appended in place past the last published row, so a
reader holding an older snapshot never sees them) and publishes it with one reference
assignment. Writers are serialised by a lock. Global item indexes: rows of the trained catalogue
keep theirs (0..n_base-1), live row j is n_base + j.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

MEDIUM_BITS = {"text": 1, "image": 2, "audio": 4}


@dataclass(frozen=True)
class LiveSnapshot:
    """What one request sees of the live catalogue (immutable; `vectors` rows past `count` are not its own)."""

    count: int = 0
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    media_bits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    added_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    ids: tuple[str, ...] = ()
    media: tuple[tuple[str, ...], ...] = ()
    titles: tuple[str | None, ...] = ()
    vector_versions: tuple[str, ...] = ()
    row_of: dict[str, int] = field(default_factory=dict)  # alive rows only
    base_deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    base_deleted_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    generation: int = 0  # catalogue operations applied (puts and deletes, from the durable log)


def media_bits(media: list[str] | tuple[str, ...] | frozenset[str]) -> int:
    return sum(MEDIUM_BITS[m] for m in media if m in MEDIUM_BITS)


class LiveCatalogue:
    """Live items of one model version over its trained catalogue of `n_base` items.

    Args:
        n_base: items in the run directory.
        dim: item vector width of this version.
        base_index_by_id: the run's item id -> index.
        taken_down: (n_base,) bool, trained items the run itself excludes from its candidates
            (taken down before the run was trained; `recsys train` keeps them for histories).

    Example::

        live = LiveCatalogue(run.items.height, 256, run.item_index_by_id)
        live.put("new-1", vector, ["image"], None, "v1"); live.lookup("new-1")  # n_base + 0
    """

    def __init__(self, n_base: int, dim: int, base_index_by_id: dict[str, int], capacity: int = 1024,
                 taken_down: np.ndarray | None = None):
        self.n_base, self.dim, self._base = n_base, dim, base_index_by_id
        self._lock = threading.Lock()
        self.sync_lock = threading.Lock()  # held by `serving.catalogue_sync.sync` while it applies the log
        self._buffer = np.zeros((capacity, dim), np.float32)
        deleted = np.zeros(n_base, bool) if taken_down is None else np.asarray(taken_down, bool).copy()
        self.snapshot = LiveSnapshot(vectors=self._buffer, base_deleted=deleted,
                                     base_deleted_ids=np.flatnonzero(deleted).astype(np.int64))

    def start_at(self, generation: int) -> None:
        """Mark the log's first `generation` operations as applied (the run was trained with them)."""
        with self._lock:
            snap = self.snapshot
            assert snap.generation == 0 and snap.count == 0, "start_at is for a freshly loaded version"
            self.snapshot = LiveSnapshot(vectors=snap.vectors, base_deleted=snap.base_deleted,
                                         base_deleted_ids=snap.base_deleted_ids, generation=int(generation))

    # ---- reads (any thread, no lock) ----
    def lookup(self, item_id: str, snap: LiveSnapshot | None = None) -> int | None:
        """Global index of an item that is servable now (live or trained and not taken down)."""
        snap = snap or self.snapshot
        row = snap.row_of.get(item_id)
        if row is not None:
            return self.n_base + row
        index = self._base.get(item_id)
        if index is None or snap.base_deleted[index]:
            return None
        return index

    # ---- writes (serialised) ----
    def put(self, item_id: str, vector: np.ndarray, media: list[str], title: str | None, vector_version: str,
            added_at: float | None = None) -> bool:
        """Add or replace an item; True when it was not servable before (created)."""
        vector = np.asarray(vector, np.float32).reshape(-1)
        assert vector.shape == (self.dim,), f"item vector must have {self.dim} values, got {vector.shape}"
        with self._lock:
            snap = self.snapshot
            existed = self.lookup(item_id, snap) is not None
            alive, base_deleted, row_of = snap.alive.copy(), snap.base_deleted, dict(snap.row_of)
            old = row_of.pop(item_id, None)
            if old is not None:
                alive[old] = False
            deleted_ids = snap.base_deleted_ids
            base_index = self._base.get(item_id)
            if base_index is not None and not base_deleted[base_index]:  # a trained item re-uploaded: live row wins
                base_deleted = base_deleted.copy()
                base_deleted[base_index] = True
                deleted_ids = np.flatnonzero(base_deleted).astype(np.int64)
            row = snap.count
            if row == len(self._buffer):
                grown = np.zeros((2 * len(self._buffer), self.dim), np.float32)
                grown[:row] = self._buffer[:row]
                self._buffer = grown
            self._buffer[row] = vector
            row_of[item_id] = row
            self.snapshot = LiveSnapshot(
                count=row + 1, vectors=self._buffer, alive=np.append(alive, True),
                media_bits=np.append(snap.media_bits, np.int8(media_bits(media))),
                added_at=np.append(snap.added_at, time.time() if added_at is None else added_at),
                ids=snap.ids + (item_id,), media=snap.media + (tuple(media),), titles=snap.titles + (title,),
                vector_versions=snap.vector_versions + (vector_version,), row_of=row_of, base_deleted=base_deleted,
                base_deleted_ids=deleted_ids, generation=snap.generation + 1)
            return not existed

    def delete(self, item_id: str) -> bool:
        """Take an item down; False when it was not servable."""
        with self._lock:
            snap = self.snapshot
            alive, base_deleted, row_of = snap.alive, snap.base_deleted, snap.row_of
            deleted_ids = snap.base_deleted_ids
            found = False
            if item_id in row_of:
                row_of = dict(row_of)
                alive = alive.copy()
                alive[row_of.pop(item_id)] = False
                found = True
            base_index = self._base.get(item_id)
            if base_index is not None and not base_deleted[base_index]:
                base_deleted = base_deleted.copy()
                base_deleted[base_index] = True
                deleted_ids = np.flatnonzero(base_deleted).astype(np.int64)
                found = True
            self.snapshot = LiveSnapshot(
                count=snap.count, vectors=snap.vectors, alive=alive, media_bits=snap.media_bits, added_at=snap.added_at,
                ids=snap.ids, media=snap.media, titles=snap.titles, vector_versions=snap.vector_versions,
                row_of=row_of, base_deleted=base_deleted, base_deleted_ids=deleted_ids, generation=snap.generation + 1)
            return found

    # ---- search over the live rows ----
    def top_k(self, query: np.ndarray, k: int, snap: LiveSnapshot, media: frozenset[str] | None,
              exclude_rows: np.ndarray | None, boost: float = 0.0, fresh_after: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k live rows (global indexes, scores); `boost` is added to rows added after `fresh_after`."""
        n = snap.count
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = snap.vectors[:n] @ np.asarray(query, np.float32)
        keep = snap.alive.copy()
        if media:
            keep &= (snap.media_bits & np.int8(media_bits(media))) != 0
        if exclude_rows is not None and len(exclude_rows):
            keep[exclude_rows[(exclude_rows >= 0) & (exclude_rows < n)]] = False
        if boost and fresh_after is not None:
            scores = scores + np.where(snap.added_at >= fresh_after, np.float32(boost), np.float32(0.0))
        rows = np.flatnonzero(keep)
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        picked = rows[np.argsort(-scores[rows], kind="stable")[:k]]
        return (picked + self.n_base).astype(np.int64), scores[picked].astype(np.float32)
