"""One loaded model version: its run directory, item index, media filters and cold-start lists.

Everything a request needs that does not depend on the user is computed here once, when the
version is loaded (index, per-media masks, item metadata, popularity order), so the request path
does a dictionary lookup, one encoder call and one index search, never a loop over the catalogue.
The trained part is immutable once built; items added or taken down while serving live in
`self.live` (`serving.catalogue.LiveCatalogue`), searched beside the index and merged by score.
Switching versions swaps the whole object (its live part replayed from the durable log).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.new_items import recorded_boost
from recsys.artifact import RunArtifact, RunDirError, load_run
from recsys.models.content_projection import ContentPath, load_content_path
from serving.catalogue import MEDIUM_BITS, LiveCatalogue, LiveSnapshot
from serving.coldstart import cold_start_list
from serving.index import AllowedItems, IndexConfig, ItemIndex

log = logging.getLogger(__name__)

_MERGE_IN_PYTHON = 512  # candidates up to which `merge_hits` runs as a dict pass


@dataclass(frozen=True)
class Hits:
    """A ranked answer: item indexes and their scores, best first."""

    indexes: np.ndarray
    scores: np.ndarray


def merge_hits(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> Hits:
    """Top-k of several (indexes, scores) lists, each index once at its best score (an unseen item
    may come from the index and, boosted, from the unseen list: it keeps its boost), best first;
    equal scores keep the order in which their items first appear in `parts`.

    A feed merges a few dozen candidates: a dict pass is ~5x cheaper than the array version there
    (each numpy call costs microseconds of dispatch); long lists take the array version."""
    if sum(len(p[0]) for p in parts) <= _MERGE_IN_PYTHON:
        best: dict[int, float] = {}
        for ids, scores in parts:
            for index, score in zip(ids.tolist(), np.asarray(scores, np.float32).tolist()):
                if score > best.get(index, -np.inf):
                    best[index] = score
        order = sorted(best, key=lambda i: -best[i])[:k]  # stable: ties keep first appearance
        return Hits(np.asarray(order, np.int64), np.asarray([best[i] for i in order], np.float32))
    all_ids = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
    all_scores = np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False)
    unique, first, inverse = np.unique(all_ids, return_index=True, return_inverse=True)
    best_scores = np.full(len(unique), -np.inf, np.float32)
    np.maximum.at(best_scores, inverse, all_scores)
    order = np.lexsort((first, -best_scores))[:k]
    return Hits(unique[order], best_scores[order])


class Retriever:
    """Candidate retrieval for one model version (the serving half of the two towers).

    Args:
        run: a loaded run directory.
        index_config: which FAISS index to build.
        cold_start_pool, mmr_lambda, max_k: cold-start list parameters.

    Example::

        r = Retriever.load("runs/tiktok"); hits = r.search(r.user_vector(["12", "7"]), k=20)
    """

    def __init__(self, run: RunArtifact, index_config: IndexConfig = IndexConfig(), *, cold_start_pool: int = 500,
                 mmr_lambda: float = 0.7, max_k: int = 200, index_store: Path | None = None,
                 index_mmap: bool = True):
        self.run = run
        self.version = run.model_version
        self.encoder = run.user_encoder  # loaded now: a broken user_encoder.pt must fail the load, not a request
        # Loaded and checked now too: a corrupt content_projection.pt fails the load, never a search.
        self.content: ContentPath | None = load_content_path(run.run_dir)
        self.index = ItemIndex(run.item_vectors, index_config, store=index_store, mmap=index_mmap,  # store: built once, memory-mapped
                               user_vectors=run.user_vectors)  # the run's users tune the search knob's recall
        self.item_ids = np.asarray(run.items["item_id"].to_list(), dtype=object)
        self.item_media: list[list[str]] = [list(m or []) for m in run.items["media"].to_list()]
        titles = run.items["title"].to_list() if "title" in run.items.columns else [None] * len(self.item_ids)
        self.item_titles: list[str | None] = titles
        pop = run.items["popularity"].to_numpy() if "popularity" in run.items.columns else np.zeros(len(self.item_ids))
        self.popularity = np.nan_to_num(pop.astype(np.float64))
        # trained items nobody interacted with in train: new items too, for the new-item prior
        self.new_item_boost = recorded_boost(run.meta)
        self.unseen = np.flatnonzero(self.popularity == 0) if "popularity" in run.items.columns else np.zeros(0, np.int64)
        self.media = sorted({m for media in self.item_media for m in media})
        self._media_masks = {m: np.fromiter((m in media for media in self.item_media), bool, len(self.item_media))
                             for m in self.media}
        self._allowed: dict[frozenset[str], AllowedItems | None] = {}
        self._cold: dict[frozenset[str], np.ndarray] = {}
        self._tombstoned: dict[frozenset[str], tuple[np.ndarray, AllowedItems]] = {}
        self._unseen_kept: dict[frozenset[str], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._cold_pool, self._mmr_lambda, self._max_k = cold_start_pool, mmr_lambda, max_k
        # items taken down before this run was trained stay in its tables (users' histories) but are no candidates
        taken_down = run.items["taken_down"].fill_null(False).to_numpy() if "taken_down" in run.items.columns else None
        self.live = LiveCatalogue(len(self.item_ids), self.index.dim, run.item_index_by_id, taken_down=taken_down)
        self.catalogue_log = None  # the dataset's operations log, attached by `load` (serving.catalogue_sync)
        self.cold_start(None)  # the unfiltered list is the common case: build it eagerly

    @classmethod
    def load(cls, run_dir: Path | str, index_config: IndexConfig = IndexConfig(), **kwargs) -> "Retriever":
        """Load and check a run directory completely; raises `RunDirError` with the reason."""
        started = time.perf_counter()
        run = load_run(run_dir, mmap=True)  # item vectors memory-mapped: server processes share one copy
        if not np.allclose(np.linalg.norm(run.item_vectors[:1000], axis=1), 1.0, atol=1e-3):
            raise RunDirError(f"{run.run_dir / 'item_vectors.npy'}: rows are not L2-normalised")
        for column in ("item_id", "media"):
            if column not in run.items.columns:
                raise RunDirError(f"{run.run_dir / 'items.parquet'}: missing column '{column}'")
        retriever = cls(run, index_config, **kwargs)
        from serving.catalogue_sync import replay_log

        replay_log(retriever)  # items added / taken down while serving, re-embedded for this version
        log.info("loaded model %s from %s (%d items, %s index) in %.2fs", retriever.version, run_dir,
                 retriever.index.n_items, retriever.index.kind, time.perf_counter() - started)
        return retriever

    @property
    def n_items(self) -> int:
        return self.index.n_items

    def allowed(self, media: frozenset[str] | None) -> AllowedItems | None:
        """The filter for items carrying any of `media`; None when it would allow everything."""
        if not media:
            return None
        key = frozenset(media)
        if key not in self._allowed:
            with self._lock:
                mask = np.zeros(self.n_items, dtype=bool)
                for medium in key & set(self.media):
                    mask |= self._media_masks[medium]
                self._allowed[key] = None if mask.all() else AllowedItems(mask)
        return self._allowed[key]

    def _allowed_now(self, media: frozenset[str] | None, snap: LiveSnapshot) -> AllowedItems | None:
        """The media filter minus taken-down items, as one FAISS selector (rebuilt once per take-down,
        not per request: over-fetching past thousands of tombstones would cost every query)."""
        allowed = self.allowed(media)
        if not len(snap.base_deleted_ids):
            return allowed
        key = frozenset(media or ())
        cached = self._tombstoned.get(key)
        if cached is None or cached[0] is not snap.base_deleted:
            mask = (allowed.mask if allowed is not None else np.ones(self.n_items, bool)) & ~snap.base_deleted
            cached = (snap.base_deleted, AllowedItems(mask))
            with self._lock:
                self._tombstoned[key] = cached
        return cached[1]

    def cold_start(self, media: frozenset[str] | None) -> np.ndarray:
        """Popular + diverse item indexes (max_k long) for users with no history."""
        key = frozenset(media or ())
        if key not in self._cold:
            allowed = self.allowed(key)
            cold = cold_start_list(self.run.item_vectors, self.popularity, allowed.mask if allowed else None,
                                   self._cold_pool, self._max_k, self._mmr_lambda)
            with self._lock:
                self._cold[key] = cold
        return self._cold[key]

    def indexes_of(self, item_ids: list[str]) -> list[int]:
        """Item indexes of the ids this version knows (unknown ids, e.g. newer items, are skipped)."""
        lookup = self.run.item_index_by_id
        return [lookup[i] for i in item_ids if i in lookup]

    def user_vector(self, history: list[int], timestamps: list[float] | None = None) -> np.ndarray:
        """The user tower on a current history (item indexes, oldest first)."""
        return self.encoder.encode([history], [timestamps] if timestamps is not None else None)[0]

    def known_user_vector(self, user_id: str) -> np.ndarray | None:
        """The vector computed at training time, for a known user whose online history is unavailable."""
        row = self.run.user_index_by_id.get(user_id)
        return self.run.user_vectors[row] if row is not None else None

    def media_now(self, snap: LiveSnapshot | None = None) -> set[str]:
        """Media of the trained catalogue and of the live items now."""
        snap = snap or self.live.snapshot
        media = set(self.media)
        if snap.count:
            bits = int(np.bitwise_or.reduce(snap.media_bits[snap.alive])) if snap.alive.any() else 0
            media |= {m for m, bit in MEDIUM_BITS.items() if bits & bit}
        return media

    # ---- items, trained or live, by global index ----
    def lookup(self, item_id: str) -> int | None:
        """Global index of a servable item (trained and not taken down, or added live)."""
        return self.live.lookup(item_id)

    def item_id(self, index: int, snap: LiveSnapshot | None = None) -> str:
        return self.item_ids[index] if index < self.n_items else (snap or self.live.snapshot).ids[index - self.n_items]

    def item_media_of(self, index: int, snap: LiveSnapshot | None = None) -> list[str]:
        return self.item_fields(index, snap or self.live.snapshot)[1]

    def item_title(self, index: int, snap: LiveSnapshot | None = None) -> str | None:
        return self.item_fields(index, snap or self.live.snapshot)[2]

    def item_fields(self, index: int, snap: LiveSnapshot) -> tuple[str, list[str], str | None]:
        """(item id, media, title) in one call: the feed payload asks for all three of k items per miss."""
        if index < self.n_items:
            return self.item_ids[index], self.item_media[index], self.item_titles[index]
        at = index - self.n_items
        return snap.ids[at], list(snap.media[at]), snap.titles[at]

    def item_vector(self, index: int, snap: LiveSnapshot | None = None) -> np.ndarray:
        if index < self.n_items:
            return self.run.item_vectors[index]
        return (snap or self.live.snapshot).vectors[index - self.n_items]

    def search(self, query: np.ndarray, k: int, media: frozenset[str] | None = None,
               exclude: np.ndarray | None = None, snap: LiveSnapshot | None = None, boost: float = 0.0,
               fresh_after: float | None = None) -> Hits:
        """Top-k over the trained index and the live items, minus take-downs and `exclude` (global indexes).

        `boost` is the new-item prior: added to the score of live items added after `fresh_after`."""
        snap = snap or self.live.snapshot
        exclude = np.asarray(exclude, np.int64) if exclude is not None and len(exclude) else np.zeros(0, np.int64)
        base_exclude = exclude[exclude < self.n_items]
        ids, scores = self.index.search(query, k, self._allowed_now(media, snap),
                                        base_exclude if len(base_exclude) else None)
        parts = [(ids, scores)]
        if boost and len(self.unseen):
            parts.append(self._boosted_unseen(query, k, media, base_exclude, snap, boost))
        if snap.count:
            parts.append(self.live.top_k(query, k, snap, media, exclude[exclude >= self.n_items] - self.n_items,
                                         boost, fresh_after))
        if len(parts) == 1:
            return Hits(ids, scores)
        return merge_hits(parts, k)

    @functools.cached_property
    def unseen_vectors(self) -> np.ndarray:
        """The never-interacted items' vectors, gathered once (a per-request gather of ~1k x 771 floats
        was 8 % of a miss) but only when a new-item prior is applied: at 10M synthetic items, 8M of
        them never interacted with, the copy is 2.1 GB that a server without a prior never reads.
        `serving.state.build_state` takes it at start-up when the server's policy will boost."""
        return np.ascontiguousarray(self.run.item_vectors[self.unseen], np.float32)

    def _boosted_unseen(self, query: np.ndarray, k: int, media: frozenset[str] | None, exclude: np.ndarray,
                        snap: LiveSnapshot, boost: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of the trained items without train interactions, with the new-item prior added."""
        dropped = self._unseen_dropped(media, snap)
        scores = self.unseen_vectors @ np.asarray(query, np.float32)
        if len(dropped):
            scores[dropped] = -np.inf
        if len(exclude):  # `unseen` is sorted: the excluded ones by binary search, not a set operation
            at = np.searchsorted(self.unseen, exclude)
            inside = at < len(self.unseen)
            at = at[inside]
            scores[at[self.unseen[at] == exclude[inside]]] = -np.inf
        n = min(k, len(scores))
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > -np.inf]  # fewer than k left after the filters
        # the boost is the same for every unseen item: added to the k kept, not to all of them
        return self.unseen[top].astype(np.int64), scores[top] + np.float32(boost)

    def _unseen_dropped(self, media: frozenset[str] | None, snap: LiveSnapshot) -> np.ndarray:
        """Positions in `unseen` the media filter or a take-down removes, cached per
        filter and take-down state, like `_allowed_now`: the common request pays no mask work."""
        key = frozenset(media or ())
        cached = self._unseen_kept.get(key)
        if cached is None or cached[0] is not snap.base_deleted:
            keep = ~snap.base_deleted[self.unseen]
            allowed = self.allowed(media)
            if allowed is not None:
                keep &= allowed.mask[self.unseen]
            cached = (snap.base_deleted, np.flatnonzero(~keep))
            with self._lock:
                self._unseen_kept[key] = cached
        return cached[1]

    def cold_hits(self, k: int, media: frozenset[str] | None, exclude: np.ndarray | None = None,
                  snap: LiveSnapshot | None = None) -> Hits:
        """The cold-start list as hits; its score is the item's popularity share (not a similarity)."""
        snap = snap or self.live.snapshot
        cold = self.cold_start(media)
        drop = snap.base_deleted_ids
        if exclude is not None and len(exclude):
            drop = np.concatenate([drop, np.asarray(exclude, np.int64)])
        if len(drop):
            cold = cold[~np.isin(cold, drop)]
        cold = cold[:k]
        total = max(float(self.popularity.sum()), 1.0)
        return Hits(cold, (self.popularity[cold] / total).astype(np.float32))

    def describe(self) -> dict:
        return {"model_version": self.version, "dataset": self.run.dataset, "run_dir": str(self.run.run_dir),
                "n_items": self.n_items, "dim": self.index.dim, "index_kind": self.index.kind, "media": self.media,
                "index": self.index.describe(), "user_tower_runtime": self.encoder.runtime}
