"""Event ingestion: the real-time half of personalisation (no retraining needed).

An accepted event is appended to the user's online history, the user's cached feeds are
invalidated, and the event is logged to `events.jsonl` for the A/B report; the next feed request
runs the user tower on the new history. Event ids make client retries harmless: each id is
claimed once in Redis (`SET NX`, kept `event_id_ttl_s`), and a claim is released again if the
append fails, so a retry after an error is not mistaken for a duplicate.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from feature_store.online import OutOfOrderEventError

from serving.cache import FeedCache
from serving.errors import ServingError
from serving.exposure_log import EVENTS, JsonlLog
from serving.history import HistoryUnavailable, UserHistory
from serving.metrics import EVENTS as EVENT_COUNT
from serving.models import Event, EventsAccepted
from serving.redis_link import REDIS_ERRORS, RedisLink
from serving.versions import LiveModels


def _unavailable(reason: str) -> ServingError:
    return ServingError(503, "online_store_unavailable", f"events cannot be stored right now: {reason}")


class EventIngest:
    """Validate, de-duplicate, store and log user events."""

    def __init__(self, models: LiveModels, cache: FeedCache, history: UserHistory | None, link: RedisLink | None,
                 logs: JsonlLog, namespace: str, id_ttl_s: int):
        self.models, self.cache, self.history, self.link, self.logs = models, cache, history, link, logs
        self.id_prefix = f"{namespace}:serve:event:"
        self.id_ttl_s = id_ttl_s

    async def ingest(self, events: list[Event]) -> EventsAccepted:
        catalogue = self.models.get(self.models.variants[0]).run.item_index_by_id
        unknown = sorted({e.item_id for e in events if e.item_id not in catalogue})
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:20]) + (f" (+{len(unknown) - 20} more)" if len(unknown) > 20 else "")
            raise ServingError(422, "unknown_item", f"unknown item id(s): {shown}", [{"item_id": i} for i in unknown])
        if self.history is None or self.link is None or not self.link.usable():
            raise _unavailable("Redis is unreachable")
        now = time.time()
        first: dict[str, Event] = {}
        for event in events:
            first.setdefault(event.event_id, event)
        batch = list(first.values())
        claimed = await self._claim([e.event_id for e in batch])
        fresh = [e for e, ok in zip(batch, claimed) if ok]
        duplicates = [e.event_id for e, ok in zip(batch, claimed) if not ok]
        duplicates += [e.event_id for e in events if first[e.event_id] is not e]
        try:
            await asyncio.to_thread(self._append, fresh, now)
        except BaseException:
            await self._release([e.event_id for e in fresh])
            raise
        await self.cache.invalidate(sorted({e.user_id for e in fresh}))
        for event in fresh:
            self.logs.write(EVENTS, {"event_id": event.event_id, "ts": event.ts if event.ts is not None else now,
                                     "user_id": event.user_id, "item_id": event.item_id, "event_type": event.event_type})
        EVENT_COUNT.labels("accepted").inc(len(fresh))
        EVENT_COUNT.labels("duplicate").inc(len(duplicates))
        return EventsAccepted(accepted=len(fresh), duplicates=duplicates)

    async def _claim(self, event_ids: list[str]) -> list[bool]:
        assert self.link is not None
        try:
            async with self.link.aio.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    pipe.set(self.id_prefix + event_id, b"1", nx=True, ex=self.id_ttl_s)
                return [bool(r) for r in await pipe.execute()]
        except REDIS_ERRORS as err:
            self.link.failed(err)
            raise _unavailable(f"Redis error ({err.__class__.__name__})") from err

    async def _release(self, event_ids: list[str]) -> None:
        if event_ids and self.link is not None:
            try:
                await self.link.aio.delete(*[self.id_prefix + i for i in event_ids])
            except REDIS_ERRORS as err:
                self.link.failed(err)

    def _append(self, events: list[Event], now: float) -> None:
        """Check order for every user first, then append: a refused batch writes nothing."""
        assert self.history is not None
        by_user: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for event in events:
            by_user[event.user_id].append((event.item_id, int(event.ts if event.ts is not None else now)))
        try:
            newest = self.history.newest_ts(list(by_user))
            for event in events:
                ts = int(event.ts if event.ts is not None else now)
                if ts < newest.get(event.user_id, ts):
                    raise ServingError(422, "event_out_of_order",
                                       f"event '{event.event_id}' (ts {ts}) is older than user '{event.user_id}''s "
                                       f"newest stored event (ts {newest[event.user_id]}); omit ts to use the time of receipt")
            for user_id, pairs in by_user.items():
                self.history.append(user_id, pairs)
        except HistoryUnavailable as err:
            raise _unavailable(str(err)) from err
        except OutOfOrderEventError as err:  # a concurrent writer got there first
            raise ServingError(422, "event_out_of_order", str(err)) from err
