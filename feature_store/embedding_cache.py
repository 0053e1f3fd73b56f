"""Offline store of content embeddings: the encoder cache and the per-dataset item-vector artefact.

`EmbeddingCache` maps (content hash, encoder version) to a vector. Content hash = sha256 of the
file bytes or UTF-8 text, so the same picture under two item ids is encoded once, and a renamed
file is not re-encoded. Vectors live under ``<store_dir>/embeddings/<encoder version>/`` as
append-only ``.npz`` shards (``hashes`` + ``vectors``); each shard is written to a temporary file
and renamed into place, so a job killed at any moment leaves only whole shards behind and a rerun
skips every hash they hold. A new encoder version is a new folder: nothing is ever invalidated in
place.

The item-vector artefact is what training loads: per medium, a float32 matrix aligned to
`item_index` plus a mask of items that have a vector, with the encoder versions/specs in its
metadata so serving can rebuild the same encoders for queries.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HASH_DTYPE = "<U64"  # hex sha256; unicode arrays load without pickle


def content_hash(content: bytes | str) -> str:
    """sha256 hex of raw bytes, or of the UTF-8 encoding of a text."""
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return hashlib.sha256(data).hexdigest()


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz so that readers see either nothing or the whole file (rename is atomic)."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class EmbeddingCache:
    """Vectors of one encoder version, keyed by content hash.

    Args:
        root: folder holding one sub-folder per encoder version (``<store_dir>/embeddings``).
        version: the encoder's `version` string (filesystem-safe).
        dim: vector size; checked against what is already stored.

    Example::

        cache = EmbeddingCache(store / "embeddings", encoder.version, encoder.dim)
        todo = cache.missing(hashes); cache.put(todo, encoder.encode(...)); vectors, found = cache.get(hashes)
    """

    def __init__(self, root: Path, version: str, dim: int) -> None:
        assert version and "/" not in version and version not in (".", ".."), f"unsafe encoder version {version!r}"
        self.dir = Path(root) / version
        self.version = version
        self.dim = dim
        self._rows: dict[str, tuple[int, int]] = {}
        self._blocks: list[np.ndarray] = []
        self._loaded = False

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def _load(self) -> None:
        if self._loaded:
            return
        for shard in self.shards():
            try:
                with np.load(shard, allow_pickle=False) as data:
                    hashes, vectors = data["hashes"], data["vectors"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                log.warning("skipping unreadable cache shard %s (%s); its items will be re-encoded", shard, exc)
                continue
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(hashes) != len(vectors):
                log.warning("skipping cache shard %s: shape %s does not match dim %d", shard, vectors.shape, self.dim)
                continue
            self._add(hashes.tolist(), vectors)
        self._loaded = True

    def _add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        block = len(self._blocks)
        self._blocks.append(vectors)
        for row, h in enumerate(hashes):
            self._rows.setdefault(h, (block, row))

    def __len__(self) -> int:
        self._load()
        return len(self._rows)

    def __contains__(self, content_hash: str) -> bool:
        self._load()
        return content_hash in self._rows

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """Hashes not cached yet, in first-seen order, without duplicates."""
        self._load()
        return list(dict.fromkeys(h for h in hashes if h not in self._rows))

    def get(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32 with zero rows where absent, found mask (n,))."""
        self._load()
        out = np.zeros((len(hashes), self.dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        for i, h in enumerate(hashes):
            where = self._rows.get(h)
            if where is not None:
                out[i] = self._blocks[where[0]][where[1]]
                found[i] = True
        return out, found

    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> Path | None:
        """Persist one batch as a new shard (atomically) and make it visible to `get`."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        assert vectors.shape == (len(hashes), self.dim), (
            f"expected vectors of shape {(len(hashes), self.dim)}, got {vectors.shape}")
        if not len(hashes):
            return None
        self._load()
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            tmp = self.dir / f".tmp-{uuid.uuid4().hex}-manifest.json"
            tmp.write_text(json.dumps({"version": self.version, "dim": self.dim}, indent=1))
            os.replace(tmp, manifest)
        shard = self.dir / f"shard-{uuid.uuid1().hex}.npz"  # uuid1: time-ordered, unique across processes
        _atomic_savez(shard, hashes=np.asarray(hashes, dtype=HASH_DTYPE), vectors=vectors)
        self._add(list(hashes), vectors)
        return shard

    def compact(self) -> None:
        """Merge all shards into one (fewer files to open next time). Crash-safe: the merged shard
        is in place before the old ones go, and duplicates across shards are harmless."""
        old = self.shards()
        if len(old) < 2:
            return
        self._loaded = False
        self._rows, self._blocks = {}, []
        self._load()
        hashes = list(self._rows)
        vectors, _ = self.get(hashes)
        merged = self.dir / f"shard-{uuid.uuid1().hex}.npz"
        _atomic_savez(merged, hashes=np.asarray(hashes, dtype=HASH_DTYPE), vectors=vectors)
        for shard in old:
            shard.unlink(missing_ok=True)
        self._rows, self._blocks = {}, []
        self._add(hashes, vectors)


# --- item-vector artefact (what training and serving load) ---------------------------------------

def item_vectors_path(store_dir: Path, dataset_name: str) -> Path:
    """Default location of a dataset's item content vectors."""
    return Path(store_dir) / "item_content_vectors" / f"{dataset_name}.npz"


def item_ids_digest(item_ids: Sequence[str]) -> str:
    """Fingerprint of the item order, so vectors are never silently applied to another catalogue."""
    return hashlib.sha256("\x1f".join(item_ids).encode("utf-8")).hexdigest()[:16]


def write_item_vectors(path: Path, item_ids: Sequence[str], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                       meta: dict[str, Any]) -> Path:
    """Save {medium: (float32 (n_items, d), bool mask (n_items,))} plus JSON metadata, atomically."""
    arrays: dict[str, np.ndarray] = {}
    for medium, (matrix, mask) in vectors.items():
        assert matrix.shape[0] == len(item_ids) == mask.shape[0], (
            f"{medium}: expected {len(item_ids)} rows, got vectors {matrix.shape} and mask {mask.shape}")
        arrays[f"{medium}__vectors"] = np.ascontiguousarray(matrix, dtype=np.float32)
        arrays[f"{medium}__mask"] = np.asarray(mask, dtype=bool)
    meta = {**meta, "media": sorted(vectors), "n_items": len(item_ids), "item_ids_digest": item_ids_digest(item_ids)}
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(path, **arrays)
    return path


def read_item_vectors(path: Path, item_ids: Sequence[str] | None = None
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Load an artefact written by `write_item_vectors`; checks it belongs to `item_ids` if given."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no item content vectors at {path}; run `recsys embed --dataset ...` first")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        vectors = {m: (data[f"{m}__vectors"], data[f"{m}__mask"]) for m in meta["media"]}
    if item_ids is not None and (meta["n_items"] != len(item_ids) or meta["item_ids_digest"] != item_ids_digest(item_ids)):
        raise ValueError(f"{path} was embedded for a different item list ({meta['n_items']} items, digest "
                         f"{meta['item_ids_digest']}) than the dataset's ({len(item_ids)} items, digest "
                         f"{item_ids_digest(item_ids)}); rerun `recsys embed`")
    return vectors, meta
