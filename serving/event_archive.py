"""The flusher: accepted events from the Redis stream into the offline Parquet store, then acked.

Each server process runs one flusher thread, a consumer of the stream's consumer group. It reads
new entries, collects them for up to `flush_s` (or `batch` entries), writes them as one Parquet
part (temp file, fsync, rename: a reader never sees half a part) and only then XACKs and XDELs
them. A server killed at any point loses nothing: entries it had read but not acknowledged stay
in its pending list and, once idle for `claim_idle_s`, are claimed by any running flusher
(including the restarted server's), which writes them again.

Parts live in the offline store's layout (`feature_store.offline.OfflineStore`), under the
dataset and data version of the model that accepted them::

    <root>/<dataset>/<data version>/serving_events/part-<first stream id>-<consumer>.parquet

Delivery into Parquet is at least once: a crash between a part's rename and its ack writes those
events again (into another part), and an event whose online append failed after it was recorded
may be flushed before it is withdrawn. `read_events` therefore de-duplicates by `event_id`, the
key clients already make unique. A part is rewritten under the same name only by its own
consumer and only with a superset of its rows, so retries after a failed ack never drop rows.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import redis

from feature_store.served_events import SCHEMA, events_folder
from serving.event_stream import FIELD, GROUP
from serving.metrics import EVENT_FLUSH_ERRORS, EVENTS_FLUSHED
from serving.redis_link import REDIS_ERRORS
from serving.responses import loads

log = logging.getLogger(__name__)

_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def _write_part(frame: pl.DataFrame, path: Path) -> None:
    """Atomic and durable: temp file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.write_parquet(tmp, statistics=True)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _stream_sort_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class EventArchiver:
    """Background thread moving stream entries to Parquet.

    Args:
        client: factory of its own Redis client given a socket timeout (a blocking read must not
            hold a slot of the request path's pool, and needs a longer timeout than requests).
        stream: stream key (`serving.event_stream.stream_key`).
        root: offline store root.
        flush_s / batch: write a part after this long or this many entries, whichever first.
        claim_idle_s: take over other consumers' entries pending this long (their server died).
        timeout_s: Redis socket timeout on top of the blocking read's own wait.
    """

    def __init__(self, client: Callable[[float], redis.Redis], stream: str, root: Path, *, flush_s: float = 1.0,
                 batch: int = 5000, claim_idle_s: float = 30.0, timeout_s: float = 1.0, consumer: str | None = None):
        self.stream, self.root = stream, Path(root)
        self.flush_s, self.batch, self.claim_idle_s = flush_s, batch, claim_idle_s
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._block_ms = max(10, int(min(flush_s, 1.0) * 1000))
        self.client = client(timeout_s + self._block_ms / 1000)
        self._buffer: dict[bytes, dict | None] = {}
        self._oldest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-flusher", daemon=True)
        self.flushed = 0  # events written (for tests and logs)

    def start(self) -> "EventArchiver":
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop after a last flush of what was read (what was not stays in the stream)."""
        self._stop.set()
        self._thread.join(timeout)
        self.client.close()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        failures, resync, next_claim = 0, True, 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                if resync:
                    self._ensure_group()
                if time.monotonic() >= next_claim:
                    resync |= self._claim_abandoned()
                    next_claim = time.monotonic() + self.claim_idle_s / 2
                if resync:
                    self._read_own_pending()
                    resync = False
                if not stopping:
                    self._read_new()
                if self._buffer and (stopping or len(self._buffer) >= self.batch
                                     or time.monotonic() - self._oldest >= self.flush_s):
                    self._flush()
                failures = 0
            except Exception as err:  # noqa: BLE001 - the loop must outlive any failure; entries wait in Redis
                EVENT_FLUSH_ERRORS.inc()
                resync = True
                if failures == 0 or stopping:
                    expected = isinstance(err, REDIS_ERRORS + (OSError, pl.exceptions.PolarsError))
                    log.log(logging.WARNING if expected else logging.ERROR, "event flusher: %s: %s (%d events "
                            "waiting; retrying)", err.__class__.__name__, err, len(self._buffer), exc_info=not expected)
                if stopping:
                    return
                self._stop.wait(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1
                continue
            if stopping:
                return

    def _ensure_group(self) -> None:
        try:  # "0": entries appended before the group existed are flushed too
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _claim_abandoned(self) -> bool:
        """Move entries other consumers left pending for claim_idle_s to this one; True if any moved."""
        claimed = False
        while True:  # claimed entries' idle time restarts, so each round from 0-0 finds only the rest
            ids = self.client.xautoclaim(self.stream, GROUP, self.consumer, int(self.claim_idle_s * 1000), "0-0",
                                         count=1000, justid=True)
            claimed |= bool(ids)
            if len(ids) < 1000:
                break
        for consumer in self.client.xinfo_consumers(self.stream, GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > 3_600_000:
                self.client.xgroup_delconsumer(self.stream, GROUP, name)  # servers gone for an hour
        return claimed

    def _read_own_pending(self) -> None:
        """Entries this consumer holds unacknowledged (after an error or a claim): back into the buffer."""
        last = "0"
        while True:
            reply = self.client.xreadgroup(GROUP, self.consumer, {self.stream: last}, count=1000)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            self._add(entries)
            last = entries[-1][0]

    def _read_new(self) -> None:
        wait = self._block_ms if not self._buffer else max(1, int((self._oldest + self.flush_s - time.monotonic()) * 1000))
        reply = self.client.xreadgroup(GROUP, self.consumer, {self.stream: ">"},
                                       count=max(1, self.batch - len(self._buffer)), block=min(wait, self._block_ms))
        if reply:
            self._add(reply[0][1])

    def _add(self, entries: list) -> None:
        if not self._buffer:
            self._oldest = time.monotonic()
        for entry_id, fields in entries:
            if entry_id is None:
                continue
            raw = (fields or {}).get(FIELD)
            try:
                self._buffer[entry_id] = loads(raw) if raw is not None else None  # None: withdrawn (XDEL)
            except ValueError:
                log.error("event flusher: entry %s is not an event (%r); dropping it", entry_id, raw[:200])
                self._buffer[entry_id] = None

    def _flush(self) -> None:
        ids = sorted(self._buffer, key=_stream_sort_key)
        rows: dict[tuple[str, str], list[dict]] = {}
        for entry_id in ids:
            event = self._buffer[entry_id]
            if event is None:
                continue
            key = (str(event.get("dataset", "unknown")), str(event.get("data_version", "unknown")))
            row = {name: event.get(name) for name in SCHEMA if name != "stream_id"}
            rows.setdefault(key, []).append({**row, "stream_id": entry_id.decode()})
        for (dataset, version), batch in rows.items():
            frame = pl.DataFrame(batch, schema=SCHEMA)
            first = batch[0]["stream_id"]
            _write_part(frame, events_folder(self.root, dataset, version) / f"part-{first}-{self.consumer}.parquet")
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()
        written = sum(len(b) for b in rows.values())
        self.flushed += written
        EVENTS_FLUSHED.inc(written)
        self._buffer.clear()
