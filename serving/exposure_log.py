"""Durable JSON Lines logs (exposures, events) written off the request path.

The A/B report is only as good as its logs, so lines are fsync'ed; but an fsync per request would
cap the server at the disk's sync rate. A background thread drains a queue in batches (every
`flush_ms` or `batch` records), writes, flushes and fsyncs once per batch; a request only pays a
queue put. `close()` drains what is left, so a clean shutdown loses nothing.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPOSURES = "exposures.jsonl"
EVENTS = "events.jsonl"
_STOP = object()


class JsonlLog:
    """Append records as JSON lines to files under `log_dir`, batched and fsync'ed in a thread.

    Example::

        logs = JsonlLog(Path("logs")); logs.write("exposures.jsonl", {"user_id": "1"}); logs.close()
    """

    def __init__(self, log_dir: Path, flush_ms: int = 50, batch: int = 1024):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_s = flush_ms / 1000.0
        self._batch = batch
        self._files: dict[str, Any] = {}
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="jsonl-log", daemon=True)
        self._thread.start()

    def write(self, name: str, record: dict[str, Any]) -> None:
        """Queue one record for `log_dir/name` (never blocks on disk)."""
        self._idle.clear()
        self._queue.put((name, record))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk (tests, shutdown)."""
        self._queue.put(None)  # wakes the writer so it finishes the current batch now
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        for handle in self._files.values():
            handle.close()

    def _handle(self, name: str) -> Any:
        if name not in self._files:
            self._files[name] = open(self.log_dir / name, "a", encoding="utf-8")
        return self._files[name]

    def _run(self) -> None:
        stop = False
        while not stop:
            pending: list[tuple[str, dict]] = []
            try:
                item = self._queue.get(timeout=self._flush_s)
            except queue.Empty:
                self._idle.set()
                continue
            while True:
                if item is _STOP:
                    stop = True
                elif item is not None:
                    pending.append(item)
                if len(pending) >= self._batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if pending:
                self._write_batch(pending)
            if self._queue.empty():
                self._idle.set()

    def _write_batch(self, pending: list[tuple[str, dict]]) -> None:
        touched = set()
        try:
            for name, record in pending:
                self._handle(name).write(json.dumps(record, separators=(",", ":")) + "\n")
                touched.add(name)
            for name in touched:
                handle = self._files[name]
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            log.exception("could not write %d log records to %s", len(pending), self.log_dir)
