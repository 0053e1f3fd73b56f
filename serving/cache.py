"""FeedCache: finished feed responses in Redis, keyed so that stale or mixed answers cannot be read.

Key = namespace : user : model version : online feature version : variant : request parameters :
user generation (the feed builds the scope).
* An event bumps the user's generation counter (one INCR), so every cached answer of that user,
  for every version and parameter set, becomes unreachable at once; old keys expire by TTL.
* The model version is in the key, so a version switch can never serve the old model's list; the
  online feature version too, so a re-materialised store (other histories) never serves a list
  computed from the previous one.
* One round trip per lookup: a Lua script reads the generation and the value and, on a miss,
  takes the key's stampede lock (`SET NX PX`) and reads the list the computation will need (the
  user's online history) in the same call; a miss then costs one more round trip to store the
  value (the lock simply expires: the value now answers for it).
* Stampede protection: concurrent misses on one key in this process share one computation
  (single flight); across processes the lock lets one compute while the others poll briefly for
  its result (and compute themselves only if it does not come).
* Any Redis failure degrades to computing without the cache; the API keeps answering.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
import itertools
import os
from collections.abc import Awaitable, Callable

from redis.exceptions import NoScriptError

from feature_store.online import user_tag
from serving.metrics import CACHE_LOOKUPS
from serving.redis_batch import TurnPipeline
from serving.redis_link import REDIS_ERRORS, RedisLink

log = logging.getLogger(__name__)

# KEYS: generation, [list to prefetch on a miss]; ARGV: value prefix, lock token, lock ms, list length
# -> {generation, value or false, 1 if this caller now holds the key's lock, prefetched list or false}
_LOOKUP = """
local g = redis.call('GET', KEYS[1]) or '0'
local key = ARGV[1] .. g
local value = redis.call('GET', key)
if value then return {g, value, 0, false} end
local locked = redis.call('SET', key .. ':lock', ARGV[2], 'NX', 'PX', ARGV[3])
local prefetched = false
if KEYS[2] then prefetched = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[4]) - 1) end
return {g, false, locked and 1 or 0, prefetched}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_POLL_S = 0.004
_TOKENS = itertools.count()
_TOKEN_PREFIX = f"{os.getpid():x}-{secrets.token_hex(4)}-"  # unique per process; a counter makes it per call

Compute = Callable[[list[bytes] | None], Awaitable[bytes]]  # gets the prefetched list (None: read it yourself)


class FeedCache:
    """Read-through cache of feed payloads (bytes) with per-user invalidation.

    Args:
        link: Redis clients and breaker; None disables the cache.
        namespace: key prefix (shared with the online store's namespace, under `:feed:`).
        ttl_s: lifetime of a cached answer.
        lock_ttl_ms / lock_wait_ms: stampede lock lifetime and how long others wait on it.
    """

    def __init__(self, link: RedisLink | None, namespace: str, ttl_s: int = 300, lock_ttl_ms: int = 2000,
                 lock_wait_ms: int = 300):
        self.link = link
        self.prefix = f"{namespace}:feed"
        self.ttl_s, self.lock_ttl_ms, self.lock_wait_s = ttl_s, lock_ttl_ms, lock_wait_ms / 1000.0
        self._inflight: dict[str, asyncio.Future] = {}
        if link is not None:
            self._lookup = link.aio.register_script(_LOOKUP)
            self._release = link.aio.register_script(_RELEASE)
            self._turn = TurnPipeline(link)  # lookups and writes of concurrent requests: one pipeline per turn

    # Every key of a user carries the user's hash tag (`user_tag`), like the user's online history,
    # so the lookup script (generation, value, lock, prefetched history) touches one cluster slot.
    def generation_key(self, user_id: str) -> str:
        return f"{self.prefix}:gen:{user_tag(user_id)}"

    def _value_prefix(self, user_id: str, scope: str) -> str:
        return f"{self.prefix}:{user_tag(user_id)}:{scope}:g"

    async def get_or_compute(self, user_id: str, scope: str, compute: Compute,
                             prefetch: tuple[str, int] | None = None) -> tuple[bytes, str]:
        """The cached payload for (user, scope) or a fresh one; returns (payload, hit|miss|coalesced|bypass).

        Args:
            compute: makes the payload on a miss; receives the prefetched list, if any.
            prefetch: (list key, length) read in the lookup's round trip when it misses.
        """
        link = self.link
        if link is None or not link.usable():
            CACHE_LOOKUPS.labels("bypass").inc()
            return await compute(None), "bypass"
        token = f"{_TOKEN_PREFIX}{next(_TOKENS)}"
        keys = [self.generation_key(user_id)] + ([prefetch[0]] if prefetch else [])
        try:
            generation, value, locked, prefetched = await self._run_lookup(
                keys, [self._value_prefix(user_id, scope), token, self.lock_ttl_ms, prefetch[1] if prefetch else 0])
        except REDIS_ERRORS as err:
            link.failed(err)
            CACHE_LOOKUPS.labels("error").inc()
            return await compute(None), "bypass"
        if value:
            CACHE_LOOKUPS.labels("hit").inc()
            return value, "hit"
        key = self._value_prefix(user_id, scope) + generation.decode()
        running = self._inflight.get(key)
        if running is not None:  # another request in this process is computing this very key
            CACHE_LOOKUPS.labels("coalesced").inc()
            return await asyncio.shield(running), "coalesced"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
        self._inflight[key] = future
        try:
            value, outcome = await self._fill(key, bool(locked), token, lambda: compute(prefetched if prefetch else None))
            future.set_result(value)
            return value, outcome
        except BaseException as err:
            if not future.done():
                future.set_exception(err)
            raise
        finally:
            self._inflight.pop(key, None)

    async def _run_lookup(self, keys: list[str], args: list) -> list:
        """The lookup script, in the turn's pipeline (`serving.redis_batch`) when there is one."""
        if not self._turn.enabled:
            return await self._lookup(keys=keys, args=args)
        try:
            return await self._turn.call("EVALSHA", self._lookup.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: this call loads the script and runs it
            return await self._lookup(keys=keys, args=args)

    async def _fill(self, key: str, locked: bool, token: str, compute: Callable[[], Awaitable[bytes]]) -> tuple[bytes, str]:
        """Miss path: wait for the lock holder's result if another process has the lock; else compute and store."""
        link = self.link
        assert link is not None
        if not locked:
            try:
                deadline = time.monotonic() + self.lock_wait_s
                while time.monotonic() < deadline:
                    await asyncio.sleep(_POLL_S)
                    value = await link.aio.get(key)
                    if value is not None:
                        CACHE_LOOKUPS.labels("coalesced").inc()
                        return value, "coalesced"
            except REDIS_ERRORS as err:
                link.failed(err)
                CACHE_LOOKUPS.labels("error").inc()
                return await compute(), "bypass"
        CACHE_LOOKUPS.labels("miss").inc()
        try:
            value = await compute()
        except BaseException:
            if locked:  # let the next request try at once instead of waiting for the lock to expire
                await self._unlock(key, token)
            raise
        try:
            await self._turn.call("SET", key, value, "EX", self.ttl_s)
        except REDIS_ERRORS as err:
            link.failed(err)
        return value, "miss"

    async def _unlock(self, key: str, token: str) -> None:
        try:
            await self._release(keys=[key + ":lock"], args=[token])
        except REDIS_ERRORS as err:
            self.link.failed(err)

    async def close(self) -> None:
        """Close the turn pipeline's own connections (the server's shutdown; the link closes its pools)."""
        if self.link is not None:
            await self._turn.close()

    async def invalidate(self, user_ids: list[str]) -> bool:
        """Make every cached answer of these users unreachable (bump their generations)."""
        link = self.link
        if link is None or not user_ids:
            return True
        if not link.usable():
            return False
        try:
            async with link.aio.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.incr(self.generation_key(user_id))
                    pipe.expire(self.generation_key(user_id), max(self.ttl_s * 4, 86400))
                await pipe.execute()
        except REDIS_ERRORS as err:
            link.failed(err)
            return False
        return True
