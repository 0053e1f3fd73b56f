"""Event ingestion: the real-time half of personalisation (no retraining needed).

An accepted event is recorded durably (claimed id + Redis Stream entry, in one script: see
`serving.event_stream`; the flusher moves it to the offline Parquet store), appended to the
user's online history, the user's cached feeds are invalidated, and it is logged to
`events.jsonl` for the A/B report; the next feed request runs the user tower on the new history.
HTTP 202 is sent only after the durable record exists.

Event ids make client retries harmless: each id is claimed once (`SET NX`, kept `event_id_ttl_s`)
with its payload's fingerprint, so a retry (same payload) is a duplicate and a reuse with another
payload is a 409 naming the id, never a silent drop. An explicit `ts` may lie at most
`max_skew_s` in the future: one far-future event would otherwise make every later event of its
user "out of order". Order of a batch: ids already seen are set aside first (so a retry is a duplicate, not an
out-of-order error), the rest are checked against each user's newest event, recorded, then
appended. If the append fails, the record and the claim are withdrawn again so that the client's
retry is not mistaken for a duplicate.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path

from feature_store.online import OutOfOrderEventError

from serving.cache import FeedCache
from feature_store.served_events import read_events
from serving.errors import ServingError
from serving.event_stream import CONFLICT, DUPLICATE, EventStream, fingerprint
from serving.exposure_log import EVENTS, JsonlLog
from serving.history import HistoryUnavailable, OnlineHistoryReader
from serving.metrics import EVENTS as EVENT_COUNT
from serving.schemas import Event, EventsAccepted
from serving.redis_link import REDIS_ERRORS, RedisLink
from serving.versions import LiveModels

log = logging.getLogger(__name__)


def _unavailable(reason: str) -> ServingError:
    return ServingError(503, "online_store_unavailable", f"events cannot be stored right now: {reason}")


def _conflict(event_ids: list[str], why: str) -> ServingError:
    shown = ", ".join(repr(i) for i in event_ids[:10]) + (f" (+{len(event_ids) - 10} more)" if len(event_ids) > 10 else "")
    return ServingError(409, "event_id_conflict", f"event id {shown} {why}: an event id names one event; use a new "
                                                  "id for another event (nothing of this batch was stored)",
                        [{"event_id": i} for i in event_ids])


class EventIngest:
    """Validate, de-duplicate, record, store and log user events."""

    def __init__(self, models: LiveModels, cache: FeedCache, history: OnlineHistoryReader | None, link: RedisLink | None,
                 logs: JsonlLog, namespace: str, id_ttl_s: int, max_skew_s: float = 300.0,
                 archive_root: Path | None = None):
        self.models, self.cache, self.history, self.link, self.logs = models, cache, history, link, logs
        self.max_skew_s, self.archive_root, self.id_ttl_s = max_skew_s, archive_root, id_ttl_s
        self._reclaim_lock = asyncio.Lock()
        self.stream = EventStream(link, namespace, id_ttl_s) if link is not None else None

    async def ingest(self, events: list[Event]) -> EventsAccepted:
        retriever = self.models.get(self.models.variants[0])
        run = retriever.run
        catalogue = run.item_index_by_id
        # known: the run's trained items, and items added live and still up (a click on a new item is the
        # point of the live catalogue; the feed already masks such an item once it is in the history)
        unknown = sorted({e.item_id for e in events
                          if e.item_id not in catalogue and retriever.live.lookup(e.item_id) is None})
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:20]) + (f" (+{len(unknown) - 20} more)" if len(unknown) > 20 else "")
            raise ServingError(422, "unknown_item", f"unknown item id(s): {shown}", [{"item_id": i} for i in unknown])
        now = time.time()
        self._check_future(events, now)
        first: dict[str, Event] = {}
        prints: dict[str, bytes] = {}
        for event in events:
            mine = fingerprint(event.user_id, event.item_id, event.event_type, event.ts)
            if prints.setdefault(event.event_id, mine) != mine:
                raise _conflict([event.event_id], "appears twice in this batch with different payloads")
            first.setdefault(event.event_id, event)
        if self.history is None or self.stream is None or not self.link.usable():
            raise _unavailable("Redis is unreachable")
        batch = list(first.values())
        claims = [(e.event_id, prints[e.event_id]) for e in batch]
        seen, complete = await self._redis(self.stream.seen(claims))
        if not complete:  # Redis lost the claims (restart without persistence): take them back from the archive
            await self._reclaim(now)
            seen, _ = await self._redis(self.stream.seen(claims))
        conflicts = [e.event_id for e, s in zip(batch, seen) if s == "conflict"]
        if conflicts:
            raise _conflict(conflicts, "already recorded with a different payload")
        candidates = [e for e, s in zip(batch, seen) if s == "new"]
        history_ts = await asyncio.to_thread(self._check_order, candidates, now)
        meta = {"dataset": run.dataset, "data_version": str(run.meta.get("data_version", "unknown")),
                "model_version": run.model_version, "received_at": now}
        results = await self._redis(self.stream.record([self._record(e, now, meta) for e in candidates],
                                                       [prints[e.event_id] for e in candidates]))
        fresh = [e for e, r in zip(candidates, results) if isinstance(r, bytes)]
        recorded = [r for r in results if isinstance(r, bytes)]
        raced = [e.event_id for e, r in zip(candidates, results) if r == CONFLICT]
        if raced:  # another request claimed the id with another payload between `seen` and `record`
            await self.stream.forget([e.event_id for e in fresh], recorded)
            raise _conflict(raced, "already recorded with a different payload")
        duplicates = [e.event_id for e, s in zip(batch, seen) if s == "duplicate"]
        duplicates += [e.event_id for e, r in zip(candidates, results) if r == DUPLICATE]
        duplicates += [e.event_id for e in events if first[e.event_id] is not e]
        try:
            await asyncio.to_thread(self._append, fresh, history_ts)
        except BaseException:
            await self.stream.forget([e.event_id for e in fresh], recorded)
            raise
        await self.cache.invalidate(sorted({e.user_id for e in fresh}))
        for event in fresh:
            self.logs.write(EVENTS, {"event_id": event.event_id, "ts": event.ts if event.ts is not None else now,
                                     "user_id": event.user_id, "item_id": event.item_id, "event_type": event.event_type})
        EVENT_COUNT.labels("accepted").inc(len(fresh))
        EVENT_COUNT.labels("duplicate").inc(len(duplicates))
        return EventsAccepted(accepted=len(fresh), duplicates=duplicates)

    async def _reclaim(self, now: float) -> None:
        """Re-claim the ids of archived events still within their TTL (once per wiped claim set)."""
        async with self._reclaim_lock:
            _, complete = await self._redis(self.stream.seen([]))
            if complete:  # another request did it meanwhile
                return
            try:
                archived = await asyncio.to_thread(self._archived_ids, now) if self.archive_root is not None else []
            except Exception as err:  # noqa: BLE001 - an unreadable archive: refuse rather than double-count
                log.error("cannot re-claim archived event ids from %s: %s: %s", self.archive_root,
                          err.__class__.__name__, err)
                raise _unavailable(f"the event id claims were lost and the archive ({self.archive_root}) cannot be "
                                   f"read ({err.__class__.__name__})") from err
            claimed = await self._redis(self.stream.reclaim(archived, now))
            log.log(logging.WARNING if claimed else logging.INFO, "event id claims were not marked complete in Redis "
                    "(a new Redis, or a restart without persistence): re-claimed %d archived event ids from %s so "
                    "retries stay duplicates", claimed, self.archive_root)

    def _archived_ids(self, now: float) -> list[tuple[str, float]]:
        """(event id, received_at) archived for the served runs' datasets within the id TTL."""
        out: list[tuple[str, float]] = []
        versions = {(r.run.dataset, str(r.run.meta.get("data_version", "unknown")))
                    for r in (self.models.get(v) for v in self.models.variants)}
        for dataset, version in sorted(versions):
            frame = read_events(self.archive_root, dataset, version)
            recent = frame.filter(frame["received_at"] >= now - self.id_ttl_s)
            out += list(zip(recent["event_id"].to_list(), recent["received_at"].to_list()))
        return out

    def _check_future(self, events: list[Event], now: float) -> None:
        """422 for an explicit `ts` later than now + `max_skew_s` (nothing of the batch is kept)."""
        limit = now + self.max_skew_s
        ahead = [e for e in events if e.ts is not None and e.ts > limit]
        if ahead:
            shown = ", ".join(f"'{e.event_id}' (ts {e.ts:.0f})" for e in ahead[:5])
            raise ServingError(422, "event_ts_in_future", f"event ts later than the server's clock allows (now "
                               f"{now:.0f} + {self.max_skew_s:g}s, RECSYS_SERVE_MAX_EVENT_SKEW_S): {shown}; send unix "
                               "seconds, or omit ts to use the time of receipt",
                               [{"event_id": e.event_id, "ts": e.ts} for e in ahead])

    @staticmethod
    def _record(event: Event, now: float, meta: dict) -> dict:
        return {"event_id": event.event_id, "user_id": event.user_id, "item_id": event.item_id,
                "event_type": event.event_type, "ts": float(event.ts if event.ts is not None else now), **meta}

    async def _redis(self, call):
        """Await a Redis call; a failure trips the breaker and is the API's 503."""
        assert self.link is not None
        try:
            return await call
        except REDIS_ERRORS as err:
            self.link.failed(err)
            raise _unavailable(f"Redis error ({err.__class__.__name__})") from err

    def _check_order(self, events: list[Event], now: float) -> dict[str, int]:
        """The history timestamp of each event (by id); 422 (nothing written) for an explicit `ts`
        older than its user's newest event. An event without `ts` gets the time of receipt, raised
        to the user's newest timestamp when that is later (another server's clock, a concurrent
        request): the server chose that time, so it must never refuse it as out of order."""
        if not events:
            return {}
        assert self.history is not None
        try:
            newest = self.history.newest_ts(sorted({e.user_id for e in events}))
        except HistoryUnavailable as err:
            raise _unavailable(str(err)) from err
        out: dict[str, int] = {}
        for event in events:
            floor = newest.get(event.user_id)
            if event.ts is None:
                out[event.event_id] = max(int(now), floor) if floor is not None else int(now)
                continue
            ts = int(event.ts)
            if floor is not None and ts < floor:
                raise ServingError(422, "event_out_of_order",
                                   f"event '{event.event_id}' (ts {ts}) is older than user '{event.user_id}''s "
                                   f"newest stored event (ts {floor}); omit ts to use the time of receipt")
            out[event.event_id] = ts
        return out

    def _append(self, events: list[Event], history_ts: dict[str, int], attempts: int = 3) -> None:
        """Append per user; a user whose events all have server-chosen times is retried with them
        raised past a concurrent writer's newer event instead of failing."""
        assert self.history is not None
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user_id].append(event)
        try:
            for user_id, mine in by_user.items():
                pairs = [(e.item_id, history_ts[e.event_id]) for e in mine]
                for attempt in range(attempts):
                    try:
                        self.history.append(user_id, pairs)
                        break
                    except OutOfOrderEventError:
                        if attempt == attempts - 1 or any(e.ts is not None for e in mine):
                            raise
                        floor = self.history.newest_ts([user_id]).get(user_id, 0)
                        pairs = [(item, max(ts, floor)) for item, ts in pairs]
        except HistoryUnavailable as err:
            raise _unavailable(str(err)) from err
        except OutOfOrderEventError as err:  # a concurrent writer got there first
            raise ServingError(422, "event_out_of_order", str(err)) from err
