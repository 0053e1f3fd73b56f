"""Online store: the features serving reads per request, from Redis, under one active version.

Key layout (``ns`` = namespace, ``ver`` = a materialisation's version id, ``{user}`` = the user id
in braces: a Redis Cluster hash tag, so every key of one user, the feed cache's included, lies in one
hash slot and the append script and the cache lookup touch one slot only)::

    ns:active                  STRING  the version serving reads (switched atomically)
    ns:versions                ZSET    every version ever started -> sequence number
    ns:v:ver:meta              HASH    dataset, dataset_version, history_cap, vector_dim, key_layout, ...
    ns:v:ver:hist:{user}       LIST    "<timestamp> <item_id>", newest first, capped
    ns:v:ver:count:{user}      STRING  number of events seen (not capped); no TTL for materialised users
    ns:v:ver:item_vec          HASH    item_id -> float32 little-endian bytes
    ns:v:ver:item_meta         HASH    item_id -> JSON object (item metadata row)

A user the materialisation did not know (a new user, created by their first event) gets a TTL
on their history list and count (``RECSYS_ONLINE_NEW_USER_TTL_S``, renewed by every event), so
one-off or made-up user ids cannot grow Redis without bound; the next materialisation folds the
users that stayed into the store proper. A count key without a TTL marks a materialised user.

Reads resolve the active version on every call; the previous version is kept after a switch, so a
reader that resolved the pointer just before a switch still finds its keys. An append resolves
the version (and its history cap, fixed per version) first, then runs one Lua script on that
user's two keys, so one append never spans two versions; an append racing a switch lands in the
previous version, like the events of the materialisation's own run time. The layout works on a
single Redis and on a Redis Cluster alike (``key_layout`` in the meta hash; a store written
with another layout is reported by `feature_store.store.compatibility_problems`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import redis

from recsys.config import get_settings


class NoActiveVersionError(LookupError):
    """The namespace has no materialised features yet."""


class OutOfOrderEventError(ValueError):
    """An appended event is older than the newest event already stored for that user."""


KEY_LAYOUT = "2"  # 2: per-user keys carry the user's hash tag (Redis Cluster); 1 (absent): before that


def user_tag(user_id: str) -> str:
    """The hash tag of every key of one user (online history and count, feed cache): ``{user_id}``."""
    return f"{{{user_id}}}"


class OnlineKeys:
    """Key names of one namespace (the single place that knows the layout above)."""

    def __init__(self, namespace: str) -> None:
        if not namespace or any(c in namespace for c in " \n\t{}"):
            raise ValueError(f"namespace must be a non-empty string without whitespace or braces, got {namespace!r}")
        self.namespace = namespace
        self.active = f"{namespace}:active"
        self.versions = f"{namespace}:versions"
        self.sequence = f"{namespace}:sequence"
        self.lock = f"{namespace}:materialize-lock"

    def prefix(self, version: str) -> str:
        return f"{self.namespace}:v:{version}:"

    def meta(self, version: str) -> str:
        return self.prefix(version) + "meta"

    def history(self, version: str, user_id: str) -> str:
        return self.prefix(version) + f"hist:{user_tag(user_id)}"

    def event_count(self, version: str, user_id: str) -> str:
        return self.prefix(version) + f"count:{user_tag(user_id)}"

    def item_vectors(self, version: str) -> str:
        return self.prefix(version) + "item_vec"

    def item_metadata(self, version: str) -> str:
        return self.prefix(version) + "item_meta"


def encode_history_entry(item_id: str, timestamp: int) -> str:
    """One history list element; the timestamp goes first because item ids may contain spaces."""
    return f"{int(timestamp)} {item_id}"


def decode_history_entry(raw: bytes) -> tuple[str, int]:
    ts, item_id = raw.decode().split(" ", 1)
    return item_id, int(ts)


# KEYS: the user's history list and event count (one version, one hash slot); ARGV: history cap,
# new-user TTL, entries oldest first. The order check and the trim happen with the push.
_APPEND_SCRIPT = """
local hist, count = KEYS[1], KEYS[2]
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local head = redis.call('LINDEX', hist, 0)
if head then
  local head_ts = tonumber(string.match(head, '^(%-?%d+) '))
  local first_ts = tonumber(string.match(ARGV[3], '^(%-?%d+) '))
  if first_ts < head_ts then
    return redis.error_reply('OUTOFORDER event at ' .. first_ts .. ' is older than the newest stored event at ' .. head_ts)
  end
end
local known = redis.call('TTL', count) == -1
for i = 3, #ARGV do redis.call('LPUSH', hist, ARGV[i]) end
redis.call('LTRIM', hist, 0, cap - 1)
redis.call('INCRBY', count, #ARGV - 2)
if not known then
  redis.call('EXPIRE', count, ttl)
  redis.call('EXPIRE', hist, ttl)
end
return 1
"""


class OnlineStore:
    """Serving-time feature reads (and streaming history appends) against the active version.

    Args:
        redis: a client from `feature_store.redis_server.connect_redis` (bytes responses).
        namespace: key prefix; defaults to settings ``RECSYS_REDIS_NAMESPACE``.
        new_user_ttl_s: lifetime of a new user's history after their last event; defaults to
            settings ``RECSYS_ONLINE_NEW_USER_TTL_S``.

    Example::

        store = OnlineStore(connect_redis()); store.get_user_history("196", 10)
    """

    def __init__(self, redis: redis.Redis, namespace: str | None = None, new_user_ttl_s: int | None = None) -> None:
        self.redis = redis
        self.keys = OnlineKeys(namespace or get_settings().redis_namespace)
        self.new_user_ttl_s = int(new_user_ttl_s or get_settings().online_new_user_ttl_s)
        if self.new_user_ttl_s < 1:
            raise ValueError(f"new_user_ttl_s must be >= 1 second, got {self.new_user_ttl_s}")
        self._append = redis.register_script(_APPEND_SCRIPT)
        self._caps: dict[str, int] = {}

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    def active_version(self) -> str | None:
        """The version id serving reads now, or None before the first materialisation."""
        raw = self.redis.get(self.keys.active)
        return raw.decode() if raw is not None else None

    def version_info(self, version: str | None = None) -> dict[str, str]:
        """Metadata a materialisation recorded (dataset, dataset_version, history_cap, ...)."""
        version = version or self._require_active()
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.keys.meta(version)).items()}

    def get_user_history(self, user_id: str, n: int | None = None) -> list[tuple[str, int]]:
        """Up to `n` (default: all kept) most recent (item_id, timestamp), newest first; [] for unknown users."""
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return []
        version = self._require_active()
        raw = self.redis.lrange(self.keys.history(version, str(user_id)), 0, -1 if n is None else n - 1)
        return [decode_history_entry(entry) for entry in raw]

    def get_user_event_count(self, user_id: str) -> int:
        """How many events the user has in total (the history list itself is capped)."""
        raw = self.redis.get(self.keys.event_count(self._require_active(), str(user_id)))
        return int(raw) if raw is not None else 0

    def append_user_events(self, user_id: str, events: Sequence[tuple[str, int]]) -> str:
        """Record new events atomically: push newest first, trim to the version's cap, bump the count.

        A user the active version does not know gets (or renews) the new-user TTL on their
        history and count. Events are sorted by timestamp first (ties keep the given order, the later one becomes the
        newest). Returns the version written to.

        Raises:
            OutOfOrderEventError: the oldest new event predates the newest stored one.
            NoActiveVersionError: nothing materialised yet.
        """
        if not events:
            return self._require_active()
        ordered = sorted(((str(item), int(ts)) for item, ts in events), key=lambda event: event[1])
        entries = [encode_history_entry(item, ts) for item, ts in ordered]
        version = self._require_active()
        cap = self._caps.get(version)
        if cap is None:  # fixed per version: read once
            raw_cap = self.redis.hget(self.keys.meta(version), "history_cap")
            if raw_cap is None:
                raise self._no_version()
            cap = self._caps[version] = int(raw_cap)
        try:
            self._append(keys=[self.keys.history(version, str(user_id)), self.keys.event_count(version, str(user_id))],
                         args=[cap, self.new_user_ttl_s, *entries])
        except redis.ResponseError as err:
            message = str(err)
            if message.startswith("OUTOFORDER"):
                raise OutOfOrderEventError(f"user {user_id}: {message.removeprefix('OUTOFORDER ')}") from err
            raise
        return version

    def get_item_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """float32 matrix (len(ids), dim), row i = ids[i].

        Raises:
            KeyError: some ids have no vector in the active version (the message lists them).
        """
        version = self._require_active()
        dim = int(self.redis.hget(self.keys.meta(version), "vector_dim") or 0)
        if not dim:
            raise KeyError(f"version {version} has no item vectors (materialise with --item-vectors)")
        if not ids:
            return np.zeros((0, dim), dtype=np.float32)
        raw = self.redis.hmget(self.keys.item_vectors(version), [str(i) for i in ids])
        self._raise_missing(ids, raw, "item vector")
        return np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(ids), dim).copy()

    def get_item_metadata(self, ids: Sequence[str]) -> list[dict]:
        """Metadata dicts (item_id, title, text, media, ...) in the order of `ids`.

        Raises:
            KeyError: some ids are unknown in the active version.
        """
        if not ids:
            return []
        raw = self.redis.hmget(self.keys.item_metadata(self._require_active()), [str(i) for i in ids])
        self._raise_missing(ids, raw, "item")
        return [json.loads(value) for value in raw]

    def _require_active(self) -> str:
        version = self.active_version()
        if version is None:
            raise self._no_version()
        return version

    def _no_version(self) -> NoActiveVersionError:
        return NoActiveVersionError(f"no features materialised in Redis namespace '{self.namespace}'; "
                                    "run `recsys features materialize --dataset NAME` first")

    @staticmethod
    def _raise_missing(ids: Sequence[str], raw: list[bytes | None], what: str) -> None:
        missing = [str(i) for i, value in zip(ids, raw) if value is None]
        if missing:
            shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
            raise KeyError(f"unknown {what} id(s) in the online store: {shown}")
