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

Train = serve: the reader reads the run's feature window (run.json ``feature_window``), and each
time the active version changes it checks the version's meta against the served run (dataset,
data version, window: `feature_store.store.run_problems`). A store materialised for another run
is not read at all (the feed falls back to the training-time vector) and `/readyz` answers 503
naming the mismatch and the `recsys features materialize ...` command that fixes it.
"""
from __future__ import annotations

import asyncio
import logging
import time

from collections.abc import Mapping
from typing import Any

from feature_store.online import NoActiveVersionError, OnlineStore, OutOfOrderEventError, decode_history_entry
from feature_store.store import run_problems

from serving.redis_link import REDIS_ERRORS, RedisLink

log = logging.getLogger(__name__)


class HistoryUnavailable(RuntimeError):
    """The online store cannot take events now (Redis down, or no features materialised)."""


class OnlineHistoryReader:
    """Read (async `read`, or blocking `recent`) and extend (blocking) users' online histories.

    Args:
        link: the server's Redis clients.
        namespace: the online store's namespace (`RECSYS_REDIS_NAMESPACE`).
        length: how many recent events make a user's query: the run's feature window.
        pointer_ttl_s: how long the store's active version is trusted before it is read again.
        expect: run.json of the served run; a store version materialised for another dataset,
            data version or window is not read (see module docstring). None: no check.
    """

    def __init__(self, link: RedisLink, namespace: str, length: int = 50, pointer_ttl_s: float = 1.0,
                 expect: Mapping[str, Any] | None = None):
        self.link, self.length, self.pointer_ttl_s = link, length, pointer_ttl_s
        self.store = OnlineStore(link.sync, namespace)
        self.keys = self.store.keys
        self.expect = expect
        self._version: str | None = None
        self._version_read_at = float("-inf")
        self._checked: tuple[str | None, list[str]] = (None, [])  # (version, its problems against `expect`)
        self._checking: dict[str, asyncio.Future] = {}

    def recent(self, user_id: str) -> list[tuple[str, int]] | None:
        """Blocking `read` through the store's own API (for worker threads, e.g. the explorer page)."""
        if not self.link.usable():
            return None
        try:
            if self._checked[1] and self._checked[0] == self.store.active_version():
                return None  # materialised for another run (see module docstring)
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
            if version is not None and await self._version_problems(version, self.expect):
                return None  # materialised for another run: its histories would be another model's input
        except REDIS_ERRORS as err:
            self.link.failed(err)
            return None
        return (self.keys.history(version, user_id), self.length) if version is not None else None

    @property
    def feature_version(self) -> str:
        """The online feature version reads currently resolve to (part of every feed cache key)."""
        return self._version or "none"

    async def problems(self, runs: list[Mapping[str, Any]]) -> list[str] | None:
        """Why the active online version cannot serve these runs ([]: it can, or nothing is
        materialised yet); None when Redis cannot be read now."""
        if not self.link.usable():
            return None
        try:
            version = await self._active_version(fresh=True)
            if version is None:
                return []
            found: list[str] = []
            for run in runs:
                found += [p for p in await self._version_problems(version, run) if p not in found]
            return found
        except REDIS_ERRORS as err:
            self.link.failed(err)
            return None

    async def _version_problems(self, version: str, run: Mapping[str, Any] | None) -> list[str]:
        """`run_problems` of `version` for `run`; for the served run, one Redis read per version
        (concurrent first requests share it)."""
        if run is None:
            return []
        if run is not self.expect:
            return run_problems(await self._read_meta(version), run, self.keys.namespace)
        if self._checked[0] == version:
            return self._checked[1]
        pending = self._checking.get(version)
        if pending is None:
            pending = self._checking[version] = asyncio.ensure_future(self._check_expected(version))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._checking.pop(version, None)

    async def _check_expected(self, version: str) -> list[str]:
        found = run_problems(await self._read_meta(version), self.expect, self.keys.namespace)
        if found:
            log.error("online feature version %s cannot serve run %s: %s", version, self.expect.get("model_version"),
                      " ".join(found))
        self._checked = (version, found)
        return found

    async def _read_meta(self, version: str) -> dict[str, str]:
        raw = await self.link.aio.hgetall(self.keys.meta(version))
        return {k.decode(): v.decode() for k, v in raw.items()}

    @staticmethod
    def decode(raw: list[bytes]) -> list[tuple[str, int]]:
        """The stored list (newest first) as (item_id, ts), oldest first."""
        return [decode_history_entry(entry) for entry in reversed(raw)]

    async def _active_version(self, fresh: bool = False) -> str | None:
        now = time.monotonic()
        # "nothing materialised" is trusted for pointer_ttl_s too: re-reading it on every request was
        # a lone Redis round trip per feed call on a server without online features (the synthetic
        # catalogues of the load benchmarks)
        if fresh or now - self._version_read_at > self.pointer_ttl_s:
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
