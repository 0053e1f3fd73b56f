"""The feed: a user's recommendations now, and item-to-item neighbours.

Request flow for `recommend`: assign the A/B variant, take that variant's current `Retriever`
(held for the whole request, so a concurrent version switch cannot mix versions), look the answer
up in the `FeedCache`; on a miss, read the user's current history from the online store, run the
run's user encoder on it and search the index (or fall back to the training-time vector, then to
the cold-start list). Every served list is logged as an exposure, with each item's propensity.

Live catalogue: the request takes one `LiveSnapshot` of the version's live items and uses it
throughout; its generation is part of the cache scope, so an item added or taken down changes
the scope and no cached answer from before the write is served after it. Fresh items reach
feeds through the new-item prior and exploration slots (`serving.catalogue_explore`).
"""
from __future__ import annotations

import itertools
import time
import uuid

import numpy as np

from serving.batching import UserVectorBatcher
from serving.cache import FeedCache
from serving.catalogue import LiveSnapshot
from serving.catalogue_explore import ExplorationPolicy, explore
from serving.catalogue_sync import sync
from serving.errors import ServingError
from serving.experiment import Experiment, interleaved_feed
from serving.exposure_log import EXPOSURES, JsonlLog, exposure_record
from serving.history import OnlineHistoryReader
from serving.metrics import EXPOSURES as EXPOSURE_COUNT
from serving.metrics import FEED_COMPUTATIONS, FEED_LATENCY
from serving.responses import dumps, loads, schema_bytes
from serving.schemas import Recommendations, SimilarItems
from serving.retriever import Hits, Retriever
from serving.versions import LiveModels


_ID_PREFIX = f"{uuid.uuid4().hex[:16]}-"  # per process; the counter makes each exposure id unique
_EXPOSURE_IDS = itertools.count()
# Another process's catalogue write (a worker, `recsys items add`) is seen by requests within this
# many seconds of its acknowledgement (and by the follower within catalogue_poll_ms regardless).
_CATALOGUE_STAT_EVERY_S = 0.005


def check_media(retriever: Retriever, media: frozenset[str] | None) -> None:
    """A filter naming only media this model has no items of would silently return nothing: refuse it."""
    if media and not media & retriever.media_now():
        raise ServingError(422, "medium_not_available",
                           f"model {retriever.version} has no items of media {sorted(media)}; "
                           f"its catalogue has: {', '.join(sorted(retriever.media_now()))}")


def items_payload(retriever: Retriever, hits: Hits, snap: LiveSnapshot | None = None) -> list[dict]:
    """The public view of ranked items (k dicts; k is small)."""
    snap = snap or retriever.live.snapshot
    items = []
    for index, score in zip(hits.indexes.tolist(), hits.scores.tolist()):
        item_id, media, title = retriever.item_fields(index, snap)
        item = {"item_id": item_id, "media": media, "score": round(score, 6)}
        if title is not None:
            item["title"] = title
        items.append(item)
    return items


class Feed:
    """Personalised feed and similar items (the request-level logic behind the routes)."""

    def __init__(self, models: LiveModels, experiment: Experiment, cache: FeedCache, history: OnlineHistoryReader | None,
                 logs: JsonlLog, exploration: ExplorationPolicy | None = None):
        self.models, self.experiment, self.cache, self.history, self.logs = models, experiment, cache, history, logs
        self.exploration = exploration or ExplorationPolicy()
        self._rng = np.random.default_rng()
        self.batcher = UserVectorBatcher()  # concurrent misses share one user-tower call

    def retriever(self, variant: str) -> Retriever:
        """The variant's current version, caught up with the catalogue log (a no-op unless a write
        landed while it was being loaded)."""
        retriever = self.models.get(variant)
        sync(retriever, max_age_s=_CATALOGUE_STAT_EVERY_S)
        return retriever

    async def recommend(self, user_id: str, k: int, media: frozenset[str] | None, exclude_seen: bool,
                        variant: str | None = None) -> bytes:
        """JSON bytes of the `Recommendations` for this user, from the cache when possible."""
        if variant is None and self.experiment.mode == "interleave":  # both variants, team-drafted (serving.experiment)
            return await interleaved_feed(self.experiment, self.logs, user_id, k,
                                          lambda v: self.recommend(user_id, k, media, exclude_seen, variant=v))
        started, log_exposure = time.perf_counter(), variant is None
        variant = variant or self.experiment.assign(user_id)
        retriever = self.retriever(variant)
        check_media(retriever, media)
        snap = retriever.live.snapshot
        prefetch = await self.history.locate(user_id) if self.history is not None else None
        features = self.history.feature_version if prefetch is not None else "none"  # re-materialised: new keys
        scope = (f"{retriever.version}:f{features}:{variant}:{k}:{','.join(sorted(media or ()))}:{int(exclude_seen)}"
                 f":c{snap.generation}")
        value, outcome = await self.cache.get_or_compute(
            user_id, scope,
            lambda history: self._compute(retriever, snap, variant, user_id, k, media, exclude_seen, history), prefetch)
        ids_line, body = value.split(b"\n", 1)
        ids, propensities = loads(ids_line)
        if log_exposure:
            self.logs.write(EXPOSURES, exposure_record(f"{_ID_PREFIX}{next(_EXPOSURE_IDS)}", time.time(), user_id,
                                                       variant, retriever.version, ids, propensities=propensities,
                                                       latency_ms=round(1000 * (time.perf_counter() - started), 3)))
        EXPOSURE_COUNT.labels(variant).inc()
        FEED_LATENCY.labels("hit" if outcome in ("hit", "coalesced") else "miss").observe(time.perf_counter() - started)
        return body

    async def _compute(self, retriever: Retriever, snap: LiveSnapshot, variant: str, user_id: str, k: int,
                       media: frozenset[str] | None, exclude_seen: bool, prefetched: list[bytes] | None) -> bytes:
        """The miss path: history (prefetched by the cache lookup, else read now) -> user tower -> index.

        The model work (well under a millisecond: one small encode, one index query) runs on the
        event loop; a thread hop would cost more than it saves. The encode is shared with the other
        misses ready in the same loop turn (`serving.batching`)."""
        FEED_COMPUTATIONS.labels(variant).inc()
        if prefetched is not None:
            history = OnlineHistoryReader.decode(prefetched)
        else:
            history = await self.history.read(user_id) if self.history is not None else None
        lookup = retriever.run.item_index_by_id
        pairs = [(lookup[item], ts) for item, ts in history or () if item in lookup]
        # seen items: trained ones and live ones (the user tower only knows the trained ones)
        seen_all = [i for i in (retriever.live.lookup(item, snap) for item, _ in history or ()) if i is not None]
        seen = np.asarray(seen_all, dtype=np.int64) if seen_all else None
        if pairs:
            query = await self.batcher.user_vector(retriever.encoder, [i for i, _ in pairs], [float(t) for _, t in pairs])
        else:  # history unknown right now (Redis down, store empty): the vector from training, if any
            query = retriever.known_user_vector(user_id)
        exclude = seen if exclude_seen else None
        cold = query is None or not np.any(query)
        policy = self.exploration
        if cold:
            hits = retriever.cold_hits(k, media, exclude, snap)
        else:
            hits = retriever.search(query, k, media, exclude, snap, boost=policy.boost_for(retriever.new_item_boost),
                                    fresh_after=policy.fresh_after())
        indexes, scores, propensities = explore(policy, snap, retriever.n_items, hits.indexes, hits.scores,
                                                None if cold else query, k, media, exclude, self._rng)
        hits = Hits(indexes, scores)
        ids = [retriever.item_id(i, snap) for i in hits.indexes.tolist()]
        body = schema_bytes(Recommendations, {"items": items_payload(retriever, hits, snap),
                                              "model_version": retriever.version, "variant": variant,
                                              "cold_start": bool(cold)})
        return dumps([ids, propensities]) + b"\n" + body

    def similar(self, item_id: str, k: int, media: frozenset[str] | None) -> bytes:
        """Nearest items to one item (any medium unless filtered), from variant A's model."""
        retriever = self.retriever(self.models.variants[0])
        check_media(retriever, media)
        snap = retriever.live.snapshot
        index = retriever.live.lookup(item_id, snap)
        if index is None:
            raise ServingError(404, "unknown_item", f"item '{item_id}' is not in model {retriever.version}'s catalogue")
        hits = retriever.search(retriever.item_vector(index, snap), k, media, np.array([index]), snap)
        return schema_bytes(SimilarItems, {"item_id": item_id, "items": items_payload(retriever, hits, snap),
                                           "model_version": retriever.version})
