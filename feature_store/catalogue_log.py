"""The durable record of catalogue writes: an append-only JSONL log plus content-addressed media
files in the offline store. One implementation for its writer (`serving.catalogue_write`,
`recsys items add`, mirrored into Redis by `serving.catalogue_store`) and its readers (the
server's replay, `serving.catalogue_sync`, and the next training run, `fold_into_dataset`).

Why a log of operations (not a table of current items): a model-version switch or a restart
replays it into the new version's live catalogue, re-embedding each item with that version's
encoders and content path (`serving.catalogue_sync`), so an item added under version A is served
by version B with a B vector, never an A one. The raw media are kept for exactly that reason:
a version whose encoder differs re-encodes them, and so does the next `recsys train`, which folds
the log into the dataset's catalogue (`fold_into_dataset`).

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
import time
from dataclasses import dataclass, field
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
        self._stat_at = -float("inf")  # monotonic time of the last stat (`refresh(max_age_s)`)
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

    def refresh(self, max_age_s: float = 0.0) -> None:
        """Read operations appended since the last read, by this process or another one (`recsys items
        add` next to a running server). A stat per call; the file is read only when it grew.

        Args:
            max_age_s: skip the stat when the last one is younger than this. The feed path passes a
                few milliseconds: this process's own writes reach `ops` without a stat, other
                processes' writes are followed every `catalogue_poll_ms` anyway, and a stat per
                request was 5 % of a cache hit's CPU at 400 requests/s.
        """
        now = time.monotonic()
        if max_age_s and now - self._stat_at < max_age_s:
            return
        self._stat_at = now
        try:
            size = os.stat(self.path).st_size
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
        import fcntl  # noqa: PLC0415 - POSIX only, like the servers that write

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

    def current(self, upto: int | None = None) -> dict[str, dict[str, Any]]:
        """item_id -> its last put, for items not taken down since (what the next training folds in),
        over the first `upto` operations (default: all)."""
        return live_items(self.ops[:upto])[0]

    def prefix_digest(self, n: int) -> str:
        """Names the first `n` operations: a run that folded them in can check it is the same log."""
        h = hashlib.sha256()
        for op in self.ops[:n]:
            h.update(json.dumps([op.get("seq"), op["op"], op["item_id"], op.get("ts"), op.get("digest")]).encode())
        return h.hexdigest()[:16]


def live_items(ops: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """(item_id -> last put of items alive after `ops`, ids whose last operation is a take-down)."""
    items: dict[str, dict[str, Any]] = {}
    deleted: set[str] = set()
    for op in ops:
        if op["op"] == "put":
            items[op["item_id"]] = op
            deleted.discard(op["item_id"])
        else:
            items.pop(op["item_id"], None)
            deleted.add(op["item_id"])
    return items, deleted


def precomputed_key(width: int) -> str:
    """The feature key of a medium given as precomputed vectors of `width` values (what serving logs)."""
    return f"precomputed-d{width}"


@dataclass
class CatalogueFold:
    """What a training run took from a catalogue log (recorded in run.json as ``catalogue_log``).

    Attributes:
        log: the ops.jsonl path; ops: how many operations were folded (a prefix of the log);
        digest: `CatalogueLog.prefix_digest(ops)`; n_base: items of the dataset itself.
        added: ids of items new to the dataset (rows n_base.. in this order); replaced: dataset
        items whose content a put replaced; removed: dataset items taken down (their rows and
        interactions stay, they are no longer candidates); ops_by_id: the put folded per item.
    """

    log: str
    ops: int
    digest: str
    n_base: int
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ops_by_id: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"log": self.log, "ops": self.ops, "digest": self.digest, "n_base": self.n_base,
                "added": len(self.added), "replaced": len(self.replaced), "removed": self.removed}

    def media_path(self, relative: str) -> Path:
        return Path(self.log).parent / relative


def open_log(store_dir: Path, dataset: str) -> CatalogueLog | None:
    """The dataset's catalogue log, or None when nothing was ever written to it."""
    if not (catalogue_dir(store_dir, dataset) / "ops.jsonl").exists():
        return None
    log_ = CatalogueLog.open(store_dir, dataset)
    log_.refresh()
    return log_


def fold_into_dataset(ds: Any, catalogue: CatalogueLog, upto: int | None = None) -> tuple[Any, CatalogueFold]:
    """The dataset with the log's first `upto` operations (default: all) folded into its catalogue.

    Items put and not taken down join the item table (new ids after the dataset's rows, in the
    order of their first put; a dataset id put again gets the new content in its own row), with
    their title, their text, and their image/audio files (absolute paths into the log's media
    folder). Media the dataset ships as precomputed vectors (TikTok) take the put's vectors of
    that width. Dataset items taken down stay in the tables (their interactions really happened
    and stay in users' histories, as the online store serves them) and are listed in `removed`:
    a run drops them from its candidates. Interactions are never changed.
    """
    import numpy as np
    import polars as pl

    from recsys.data.schema import Dataset

    upto = len(catalogue.ops) if upto is None else min(int(upto), len(catalogue.ops))
    alive, deleted = live_items(catalogue.ops[:upto])
    base_index = {item_id: i for i, item_id in enumerate(ds.items["item_id"].to_list())}
    fold = CatalogueFold(str(catalogue.path), upto, catalogue.prefix_digest(upto), ds.n_items,
                         added=[i for i in alive if i not in base_index], replaced=[i for i in alive if i in base_index],
                         removed=sorted((i for i in deleted if i in base_index), key=base_index.__getitem__),
                         ops_by_id=alive)
    if not alive:
        return ds, fold

    def row(item_id: str, index: int) -> dict[str, Any]:
        op = alive[item_id]
        files = op.get("files") or {}
        text = None
        if "text" in files:
            text = catalogue.read_media(files["text"]).decode("utf-8", errors="replace")
        return {"item_id": item_id, "item_index": index, "media": sorted(op["media"]), "title": op.get("title"),
                "text": text, **{f"{m}_uri": str(catalogue.root / files[m]) if m in files else None
                                 for m in ("image", "audio")}}

    columns = ["item_id", "item_index", "media", "title", "text", "image_uri", "audio_uri"]
    schema = {c: ds.items.schema.get(c, pl.String) for c in columns}
    items = ds.items
    if fold.replaced:  # re-put dataset items: the new content in their own row
        content = [c for c in columns[2:] if c in items.columns]
        new = pl.DataFrame([row(i, base_index[i]) for i in fold.replaced], schema=schema)
        items = (items.join(new.select("item_id", *content), on="item_id", how="left", suffix="_new")
                 .with_columns([pl.when(pl.col("item_id").is_in(fold.replaced)).then(pl.col(f"{c}_new"))
                                .otherwise(pl.col(c)).alias(c) for c in content])
                 .select(ds.items.columns))
    if fold.added:
        extra = pl.DataFrame([row(item_id, ds.n_items + j) for j, item_id in enumerate(fold.added)], schema=schema)
        items = pl.concat([items, extra], how="diagonal_relaxed").select(ds.items.columns)
    items = items.sort("item_index")

    row_of = {**{i: base_index[i] for i in fold.replaced}, **{i: ds.n_items + j for j, i in enumerate(fold.added)}}
    features, masks = {}, {}
    for medium in sorted(set(ds.item_features) | set(ds.feature_mask)):
        mask = np.zeros(items.height, bool)
        mask[:ds.n_items] = np.asarray(ds.feature_mask.get(medium, np.ones(ds.n_items, bool)), bool)
        matrix = ds.item_features.get(medium)
        grown = None
        if matrix is not None:
            grown = np.zeros((items.height, matrix.shape[1]), np.float32)
            grown[:ds.n_items] = matrix
        for item_id, index in row_of.items():
            op = alive[item_id]
            if grown is not None:  # precomputed medium: the put's vector of that width, if any
                vector = ((op.get("features") or {}).get(medium) or {}).get(precomputed_key(grown.shape[1]))
                grown[index] = np.asarray(vector, np.float32) if vector is not None else 0.0
                mask[index] = vector is not None
            else:
                mask[index] = medium in op["media"]
        masks[medium] = mask
        if grown is not None:
            features[medium] = grown
    folded = Dataset(name=ds.name, items=items, interactions=ds.interactions, item_features=features,
                     feature_mask=masks, users=ds.users, timestamps_synthetic=ds.timestamps_synthetic,
                     source_files=ds.source_files)
    return folded, fold


