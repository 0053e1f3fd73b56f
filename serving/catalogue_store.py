"""The durable record of catalogue writes: an append-only JSONL log plus content-addressed media
files in the offline store, mirrored into the online store (Redis) for other readers.

Why a log of operations (not a table of current items): a model-version switch or a restart
replays it into the new version's live catalogue, re-embedding each item with that version's
encoders and content path (`serving.catalogue_sync`), so an item added under version A is served
by version B with a B vector, never an A one. The raw media are kept for exactly that reason:
a version whose encoder differs re-encodes them. The next `recsys train` can fold the log in.

Layout, per dataset, under ``<RECSYS_STORE_DIR>/offline/catalogue/<dataset>/``:
``ops.jsonl`` (one JSON object per line: ``{"seq", "op": "put"|"delete", "item_id", "ts", ...}``)
and ``media/<sha256>.bin``. A line is fsynced before the write is acknowledged; a torn last line
(crash mid-write) is ignored on read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def catalogue_dir(store_dir: Path, dataset: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(dataset).name or dataset)
    return Path(store_dir) / "offline" / "catalogue" / safe


class CatalogueLog:
    """Append-only operations log of one dataset's live catalogue (thread-safe, one writer process).

    Example::

        log = CatalogueLog.open(store_dir, "tiktok"); log.append({"op": "delete", "item_id": "7"})
    """

    _open: dict[Path, "CatalogueLog"] = {}
    _open_lock = threading.Lock()

    def __init__(self, root: Path):
        self.root = root
        self.path = root / "ops.jsonl"
        self.media_dir = root / "media"
        self._lock = threading.Lock()
        self._offset = 0  # bytes of ops.jsonl read so far
        self._size = -1
        self.ops: list[dict[str, Any]] = []
        self.refresh()

    @classmethod
    def open(cls, store_dir: Path, dataset: str) -> "CatalogueLog":
        """One instance per log file in this process, so every model version sees the same operations."""
        root = catalogue_dir(store_dir, dataset).resolve()
        with cls._open_lock:
            if root not in cls._open:
                cls._open[root] = cls(root)
            return cls._open[root]

    def refresh(self) -> None:
        """Read operations appended since the last read, by this process or another one (`recsys items
        add` next to a running server). A stat per call; the file is read only when it grew."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == self._size:
            return
        with self._lock:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
            for line in complete.splitlines():
                try:
                    op = json.loads(line)
                except ValueError:
                    log.warning("%s: unreadable line skipped (torn write?)", self.path)
                    continue
                if isinstance(op, dict) and op.get("op") in ("put", "delete") and isinstance(op.get("item_id"), str):
                    self.ops.append(op)
            self._offset += len(complete)
            self._size = self._offset if len(complete) == len(chunk) else -1

    def __len__(self) -> int:
        return len(self.ops)

    def save_media(self, data: bytes) -> str:
        """Store raw media bytes once (by content hash); returns the path relative to the log's folder."""
        name = f"{hashlib.sha256(data).hexdigest()}.bin"
        target = self.media_dir / name
        if not target.exists():
            self.media_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(target)
        return f"media/{name}"

    def read_media(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def append(self, op: dict[str, Any]) -> dict[str, Any]:
        """Durably append one operation (fsync) and return it with its sequence number.

        Under an exclusive lock on ``ops.lock``, so several writer processes (``recsys serve
        --workers N``, ``recsys items add``) read each other's lines first and never reuse a seq."""
        import fcntl  # noqa: PLC0415

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "ops.lock", "a") as process_lock:
            fcntl.flock(process_lock, fcntl.LOCK_EX)
            return self._append_locked(op)

    def _append_locked(self, op: dict[str, Any]) -> dict[str, Any]:
        self.refresh()
        with self._lock:
            op = {**op, "seq": len(self.ops)}
            line = json.dumps(op, separators=(",", ":")).encode() + b"\n"
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.ops.append(op)
            self._offset += len(line)
            self._size = self._offset
            return op

    def current(self) -> dict[str, dict[str, Any]]:
        """item_id -> its last put, for items not taken down since (what the next training folds in)."""
        items: dict[str, dict[str, Any]] = {}
        for op in self.ops:
            if op["op"] == "put":
                items[op["item_id"]] = op
            else:
                items.pop(op["item_id"], None)
        return items


def online_key(namespace: str, dataset: str) -> str:
    """Redis hash of the live catalogue: item_id -> JSON {media, title, metadata, ts, seq}."""
    return f"{namespace}:catalogue:{dataset}:items"


async def mirror_online(link: Any, namespace: str, dataset: str, op: dict[str, Any]) -> bool:
    """Reflect one operation in the online store; False (logged) when Redis is unavailable — the
    log is the record, and the next write or a restart catches Redis up."""
    if link is None or not link.usable():
        return False
    key = online_key(namespace, dataset)
    try:
        if op["op"] == "put":
            summary = {k: op.get(k) for k in ("media", "title", "metadata", "ts", "seq")}
            await link.aio.hset(key, op["item_id"], json.dumps(summary))
        else:
            await link.aio.hdel(key, op["item_id"])
        link.ok()
        return True
    except Exception as err:  # noqa: BLE001  (redis errors of any kind: degrade, never fail the write)
        link.failed(err)
        log.warning("catalogue: online store not updated for %s (%s)", op["item_id"], err)
        return False
