"""A user's current history for serving: the online store's list (offline history + live events).

A thin, failure-tolerant view over `feature_store.online`: the feed must still answer when Redis
is down or nothing is materialised yet, so reads return None ("unknown right now") instead of
raising, and the caller falls back to the training-time user vector or cold start. Writes
(events) do raise, as `HistoryUnavailable`, because accepting an event we cannot store would lie
to the client.

Reads are on the request's hot path, so they are async and cost one round trip: the store's
active-version pointer is re-read at most every `pointer_ttl_s` (and whenever an append reports a
newer version, so an event is always read back from the version it was written to), then the
list is read with the store's own key layout (`OnlineKeys`, `decode_history_entry`). A stale
pointer after a re-materialisation is safe: the store keeps the previous version readable.
"""
from __future__ import annotations

import logging
import time

from feature_store.online import (NoActiveVersionError, OnlineKeys, OnlineStore, OutOfOrderEventError,
                                  decode_history_entry)

from serving.redis_link import REDIS_ERRORS, RedisLink

log = logging.getLogger(__name__)


class HistoryUnavailable(RuntimeError):
    """The online store cannot take events now (Redis down, or no features materialised)."""


class OnlineHistoryReader:
    """Read (async `read`, or blocking `recent`) and extend (blocking) users' online histories.

    Args:
        link: the server's Redis clients.
        namespace: the online store's namespace (`RECSYS_REDIS_NAMESPACE`).
        length: how many recent events make a user's query (`RECSYS_ONLINE_HISTORY_CAP`).
        pointer_ttl_s: how long the store's active version is trusted before it is read again.
    """

    def __init__(self, link: RedisLink, namespace: str, length: int = 50, pointer_ttl_s: float = 1.0):
        self.link, self.length, self.pointer_ttl_s = link, length, pointer_ttl_s
        self.store = OnlineStore(link.sync, namespace)
        self.keys = OnlineKeys(namespace)
        self._version: str | None = None
        self._version_read_at = float("-inf")

    def recent(self, user_id: str) -> list[tuple[str, int]] | None:
        """Blocking `read` through the store's own API (for worker threads, e.g. the explorer page)."""
        if not self.link.usable():
            return None
        try:
            return self.store.get_user_history(user_id, self.length)[::-1]
        except NoActiveVersionError:
            return None
        except REDIS_ERRORS as err:
            self.link.failed(err)
            return None

    async def read(self, user_id: str) -> list[tuple[str, int]] | None:
        """Up to `length` (item_id, ts), oldest first; None when the store cannot be read now."""
        located = await self.locate(user_id)
        if located is None:
            return None
        try:
            raw = await self.link.aio.lrange(located[0], 0, located[1] - 1)
        except REDIS_ERRORS as err:
            self.link.failed(err)
            return None
        return self.decode(raw)

    async def locate(self, user_id: str) -> tuple[str, int] | None:
        """(Redis list key, length to read) of the user's history, for callers that batch the read
        into another round trip (the feed cache lookup); None when the store cannot be read now."""
        if not self.link.usable():
            return None
        try:
            version = await self._active_version()
        except REDIS_ERRORS as err:
            self.link.failed(err)
            return None
        return (self.keys.history(version, user_id), self.length) if version is not None else None

    @staticmethod
    def decode(raw: list[bytes]) -> list[tuple[str, int]]:
        """The stored list (newest first) as (item_id, ts), oldest first."""
        return [decode_history_entry(entry) for entry in reversed(raw)]

    async def _active_version(self) -> str | None:
        now = time.monotonic()
        if self._version is None or now - self._version_read_at > self.pointer_ttl_s:
            raw = await self.link.aio.get(self.keys.active)
            self._version, self._version_read_at = (raw.decode() if raw is not None else None), now
        return self._version

    def newest_ts(self, user_ids: list[str]) -> dict[str, int]:
        """Timestamp of each user's newest stored event (users without history are absent)."""
        out: dict[str, int] = {}
        for user_id in user_ids:
            head = self._write_call(self.store.get_user_history, user_id, 1)
            if head:
                out[user_id] = head[0][1]
        return out

    def append(self, user_id: str, events: list[tuple[str, int]]) -> None:
        """Append (item_id, ts) events; raises `HistoryUnavailable` or `OutOfOrderEventError`."""
        version = self._write_call(self.store.append_user_events, user_id, events)
        if version != self._version:  # read back from where it was written, not a stale pointer
            self._version, self._version_read_at = version, time.monotonic()

    def _write_call(self, fn, *args):
        try:
            return fn(*args)
        except NoActiveVersionError as err:
            raise HistoryUnavailable(str(err)) from err
        except OutOfOrderEventError:
            raise
        except REDIS_ERRORS as err:
            self.link.failed(err)
            raise HistoryUnavailable(f"online store unreachable ({err.__class__.__name__}: {err})") from err
