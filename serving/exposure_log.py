"""Durable JSON Lines logs (exposures, events) written off the request path, rotated by size.

The A/B report is only as good as its logs, so lines are fsync'ed; but an fsync per request would
cap the server at the disk's sync rate. A background thread drains a queue in batches (every
`flush_ms` or `batch` records), writes, flushes and fsyncs once per batch; a request only pays a
queue put. `close()` drains what is left, so a clean shutdown loses nothing.

Rotation keeps the disk bounded: when the active file (`exposures.jsonl`) would pass `max_bytes`
it is renamed to the next numbered part (`exposures.000001.jsonl`, `exposures.000002.jsonl`, ...)
and a fresh active file starts; only the newest `keep_parts` parts are kept. Part numbers never
restart, so a reader can tell that old parts were deleted (`training.ab.logs` reads every part,
oldest first, then the active file, and warns about a gap).

An exposure record says what was shown and, for off-policy evaluation, with which probability:
`exposure_record` builds it, so every writer (feed, interleaving, exploration slots) logs the
same shape.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.responses import dumps

log = logging.getLogger(__name__)

EXPOSURES = "exposures.jsonl"
EVENTS = "events.jsonl"
_STOP = object()
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_KEEP_PARTS = 20


def part_name(name: str, number: int) -> str:
    """`exposures.jsonl`, 3 -> `exposures.000003.jsonl` (sorts by number as text)."""
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.{number:06d}.{suffix}"


def rotated_parts(log_dir: Path, name: str) -> list[tuple[int, Path]]:
    """Rotated parts of `name` under `log_dir` as (number, path), oldest first."""
    stem, _, suffix = name.rpartition(".")
    pattern = re.compile(rf"^{re.escape(stem)}\.(\d{{6,}})\.{re.escape(suffix)}$")
    found = []
    for path in Path(log_dir).glob(f"{stem}.*.{suffix}"):
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def exposure_record(exposure_id: str, ts: float, user_id: str, variant: str, model_version: str, items: Sequence[str],
                    propensities: Sequence[float] | None = None, teams: Sequence[str] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """One line of exposures.jsonl.

    Args:
        items: the shown item ids, in slate order.
        propensities: per shown item, the probability that the serving policy would show that
            item in this slate (exploration slots, randomised ranking). Absent means a
            deterministic ranking, logged as 1.0 each: off-policy evaluation then has no support
            outside the slate, and the report says so.
        teams: per shown item, the variant whose ranking contributed it (team-draft interleaving).
        extra: optional guardrail fields (`latency_ms`, `status`, `new_items`).

    Raises ValueError when a list is not aligned with `items` or a propensity is not in (0, 1].
    """
    items = list(items)
    probs = [1.0] * len(items) if propensities is None else [float(p) for p in propensities]
    if len(probs) != len(items):
        raise ValueError(f"propensities has {len(probs)} values for {len(items)} shown items")
    bad = [p for p in probs if not (math.isfinite(p) and 0.0 < p <= 1.0)]
    if bad:
        raise ValueError(f"propensities must lie in (0, 1], got {bad[:3]}")
    record: dict[str, Any] = {"exposure_id": exposure_id, "ts": ts, "user_id": user_id, "variant": variant,
                              "model_version": model_version, "items": items, "propensities": probs}
    if teams is not None:
        teams = list(teams)
        if len(teams) != len(items):
            raise ValueError(f"teams has {len(teams)} entries for {len(items)} shown items")
        record["teams"] = teams
    record.update(extra)
    return record


class JsonlLog:
    """Append records as JSON lines to files under `log_dir`, batched and fsync'ed in a thread.

    Example::

        logs = JsonlLog(Path("logs"), max_bytes=64 << 20); logs.write("exposures.jsonl", {"user_id": "1"}); logs.close()
    """

    def __init__(self, log_dir: Path, flush_ms: int = 50, batch: int = 1024, max_bytes: int = DEFAULT_MAX_BYTES,
                 keep_parts: int = DEFAULT_KEEP_PARTS):
        assert max_bytes > 0 and keep_parts >= 1, f"need max_bytes > 0 and keep_parts >= 1, got {max_bytes}, {keep_parts}"
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.keep_parts = max_bytes, keep_parts
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_s = flush_ms / 1000.0
        self._batch = batch
        self._files: dict[str, Any] = {}
        self._wake = threading.Event()  # flush(), close() or a full batch: write now, do not wait out the interval
        self._thread = threading.Thread(target=self._run, name="jsonl-log", daemon=True)
        self._thread.start()

    def write(self, name: str, record: dict[str, Any]) -> None:
        """Queue one record for `log_dir/name` (never blocks on disk; one C-level queue put)."""
        self._queue.put((name, record))
        if self._queue.qsize() >= self._batch:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)  # the writer sets it once everything queued before it is written
        self._wake.set()
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout=10)
        for handle in self._files.values():
            handle.close()

    def _handle(self, name: str) -> Any:
        if name not in self._files:
            # Unbuffered binary: each batch is one write(2) on an O_APPEND descriptor, so neither another
            # server process nor a reader tailing the file sees a batch cut by a buffer boundary.
            self._files[name] = open(self.log_dir / name, "ab", buffering=0)
        return self._files[name]

    def _run(self) -> None:
        """Sleep until a record arrives, then let the others of the next `flush_ms` join it: one
        write and one fsync per interval. Waking per record, as this loop once did, cost a thread
        switch, a GIL hand-over and an fsync per feed request: ~20 % of a cache hit's server CPU
        at 400 requests/s (py-spy)."""
        stop = False
        while not stop:
            item = self._queue.get()
            self._wake.wait(self._flush_s)
            self._wake.clear()
            pending: list[tuple[str, dict]] = []
            markers: list[threading.Event] = []
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    pending.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            for start in range(0, len(pending), self._batch):
                self._write_batch(pending[start:start + self._batch])
            for marker in markers:
                marker.set()

    def _write_batch(self, pending: list[tuple[str, dict]]) -> None:
        """Write the batch, one `write` per file, so N server processes (``recsys serve --workers N``)
        appending to one file (O_APPEND) never split each other's lines."""
        lines: dict[str, list[bytes]] = {}
        for name, record in pending:
            lines.setdefault(name, []).append(dumps(record) + b"\n")
        try:
            for name, chunk in lines.items():
                data = memoryview(b"".join(chunk))
                handle = self._current(name)
                size = os.fstat(handle.fileno()).st_size
                if size and size + len(data) > self.max_bytes:
                    self._rotate(name)
                    handle = self._handle(name)
                while data:  # a regular file takes it in one call; loop only for the rare short write
                    data = data[handle.write(data):]
                os.fsync(handle.fileno())
        except OSError:
            log.exception("could not write %d log records to %s", len(pending), self.log_dir)

    def _current(self, name: str) -> Any:
        """The open handle of the active file, reopened when another process rotated it away."""
        handle = self._handle(name)
        try:
            moved = os.stat(self.log_dir / name).st_ino != os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            self._files.pop(name).close()
            handle = self._handle(name)
        return handle

    def _rotate(self, name: str) -> None:
        """Close the active file, rename it to the next part, delete parts beyond `keep_parts`.

        Under an exclusive lock on ``<name>.lock``: with several server processes only one renames
        the file; the others find it already rotated (another inode) and just reopen it."""
        import fcntl  # noqa: PLC0415 - POSIX only, like the servers that rotate

        handle = self._files.pop(name)
        os.fsync(handle.fileno())
        with open(self.log_dir / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                active = self.log_dir / name
                try:
                    ours = os.stat(active).st_ino == os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    ours = False
                handle.close()
                if not ours:
                    return  # another process rotated it already
                parts = rotated_parts(self.log_dir, name)
                number = parts[-1][0] + 1 if parts else 1
                os.replace(active, self.log_dir / part_name(name, number))
                parts.append((number, self.log_dir / part_name(name, number)))
                for _, old in parts[:-self.keep_parts]:
                    old.unlink(missing_ok=True)
                    log.warning("log rotation deleted %s (keep_parts=%d): reports over this period lose its records",
                                old, self.keep_parts)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
