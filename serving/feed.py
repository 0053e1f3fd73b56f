"""The feed: a user's recommendations now, and item-to-item neighbours.

Request flow for `recommend`: assign the A/B variant, take that variant's current `Retriever`
(held for the whole request, so a concurrent version switch cannot mix versions), look the answer
up in the `FeedCache`; on a miss, read the user's current history from the online store, run the
run's user encoder on it and search the index (or fall back to the training-time vector, then to
the cold-start list). Every served list is logged as an exposure.
"""
from __future__ import annotations

import itertools
import time
import uuid

import numpy as np

from serving.cache import FeedCache
from serving.errors import ServingError
from serving.experiment import Experiment
from serving.exposure_log import EXPOSURES, JsonlLog
from serving.history import OnlineHistoryReader
from serving.metrics import EXPOSURES as EXPOSURE_COUNT
from serving.metrics import FEED_COMPUTATIONS, FEED_LATENCY
from serving.responses import dumps, loads, schema_bytes
from serving.schemas import Recommendations, SimilarItems
from serving.retriever import Hits, Retriever
from serving.versions import LiveModels


_ID_PREFIX = f"{uuid.uuid4().hex[:16]}-"  # per process; the counter makes each exposure id unique
_EXPOSURE_IDS = itertools.count()


def check_media(retriever: Retriever, media: frozenset[str] | None) -> None:
    """A filter naming only media this model has no items of would silently return nothing: refuse it."""
    if media and not media & set(retriever.media):
        raise ServingError(422, "medium_not_available",
                           f"model {retriever.version} has no items of media {sorted(media)}; "
                           f"its catalogue has: {', '.join(retriever.media)}")


def items_payload(retriever: Retriever, hits: Hits) -> list[dict]:
    """The public view of ranked items (k dicts; k is small)."""
    items = []
    for index, score in zip(hits.indexes.tolist(), hits.scores.tolist()):
        item = {"item_id": retriever.item_ids[index], "media": retriever.item_media[index], "score": round(score, 6)}
        title = retriever.item_titles[index]
        if title is not None:
            item["title"] = title
        items.append(item)
    return items


class Feed:
    """Personalised feed and similar items (the request-level logic behind the routes)."""

    def __init__(self, models: LiveModels, experiment: Experiment, cache: FeedCache, history: OnlineHistoryReader | None,
                 logs: JsonlLog):
        self.models, self.experiment, self.cache, self.history, self.logs = models, experiment, cache, history, logs

    async def recommend(self, user_id: str, k: int, media: frozenset[str] | None, exclude_seen: bool) -> bytes:
        """JSON bytes of the `Recommendations` for this user, from the cache when possible."""
        started = time.perf_counter()
        variant = self.experiment.assign(user_id)
        retriever = self.models.get(variant)
        check_media(retriever, media)
        prefetch = await self.history.locate(user_id) if self.history is not None else None
        features = self.history.feature_version if prefetch is not None else "none"  # re-materialised: new keys
        scope = f"{retriever.version}:f{features}:{variant}:{k}:{','.join(sorted(media or ()))}:{int(exclude_seen)}"
        value, outcome = await self.cache.get_or_compute(
            user_id, scope, lambda history: self._compute(retriever, variant, user_id, k, media, exclude_seen, history),
            prefetch)
        ids_line, body = value.split(b"\n", 1)
        self.logs.write(EXPOSURES, {"exposure_id": f"{_ID_PREFIX}{next(_EXPOSURE_IDS)}", "ts": time.time(), "user_id": user_id,
                                    "variant": variant, "model_version": retriever.version, "items": loads(ids_line)})
        EXPOSURE_COUNT.labels(variant).inc()
        FEED_LATENCY.labels("hit" if outcome in ("hit", "coalesced") else "miss").observe(time.perf_counter() - started)
        return body

    async def _compute(self, retriever: Retriever, variant: str, user_id: str, k: int, media: frozenset[str] | None,
                       exclude_seen: bool, prefetched: list[bytes] | None) -> bytes:
        """The miss path: history (prefetched by the cache lookup, else read now) -> user tower -> index.

        The model work (well under a millisecond: one small encode, one index query) runs on the
        event loop; a thread hop would cost more than it saves."""
        FEED_COMPUTATIONS.labels(variant).inc()
        if prefetched is not None:
            history = OnlineHistoryReader.decode(prefetched)
        else:
            history = await self.history.read(user_id) if self.history is not None else None
        lookup = retriever.run.item_index_by_id
        pairs = [(lookup[item], ts) for item, ts in history or () if item in lookup]
        seen = np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs)) if pairs else None
        if pairs:
            query = retriever.user_vector([i for i, _ in pairs], [float(t) for _, t in pairs])
        else:  # history unknown right now (Redis down, store empty): the vector from training, if any
            query = retriever.known_user_vector(user_id)
        exclude = seen if exclude_seen else None
        cold = query is None or not np.any(query)
        hits = retriever.cold_hits(k, media, exclude) if cold else retriever.search(query, k, media, exclude)
        ids = [retriever.item_ids[i] for i in hits.indexes.tolist()]
        body = schema_bytes(Recommendations, {"items": items_payload(retriever, hits), "model_version": retriever.version,
                                              "variant": variant, "cold_start": bool(cold)})
        return dumps(ids) + b"\n" + body

    def similar(self, item_id: str, k: int, media: frozenset[str] | None) -> bytes:
        """Nearest items to one item (any medium unless filtered), from variant A's model."""
        retriever = self.models.get(self.models.variants[0])
        check_media(retriever, media)
        index = retriever.run.item_index_by_id.get(item_id)
        if index is None:
            raise ServingError(404, "unknown_item", f"item '{item_id}' is not in model {retriever.version}'s catalogue")
        hits = retriever.search(retriever.run.item_vectors[index], k, media, np.array([index]))
        return schema_bytes(SimilarItems, {"item_id": item_id, "items": items_payload(retriever, hits),
                                           "model_version": retriever.version})
