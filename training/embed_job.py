"""Embed job: turn every item's text / image / audio into vectors that training can load.

For each medium the job reads the item's content (text column, or the file behind image_uri /
audio_uri, relative URIs resolved against the dataset folder), hashes it, skips what the
`EmbeddingCache` already holds, encodes the rest in batches and writes each batch to the cache
as it finishes (so a killed job resumes where it stopped). Unreadable or corrupt content is
recorded (item id, path, reason) and skipped; everything else completes. Media that a dataset
ships as precomputed vectors (TikTok) pass through a `PrecomputedEncoder`.

The result is one artefact per dataset (`item_vectors_path`): per medium a float32 matrix aligned
to `item_index` and a mask of items that have a vector; `load_item_content_vectors` reads it.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feature_store.embedding_cache import (EmbeddingCache, content_hash, item_vectors_path, read_item_vectors,
                                           write_item_vectors)
from recsys.data import Dataset, load_dataset
from recsys.encoders import ContentEncoder, EncoderInputError, EncoderSpec, PrecomputedSpec, build_encoder, spec_to_dict
from recsys.encoders.media_io import read_source_bytes
from recsys.encoders.specs import AudioSpec, ImageSpec, TextSpec

log = logging.getLogger(__name__)

SOURCE_COLUMN = {"image": "image_uri", "audio": "audio_uri"}


@dataclass(frozen=True)
class EmbedConfig:
    """What to embed and how.

    Args:
        media: media to embed; None = every medium the dataset has content or vectors for.
        specs: encoder spec per medium (missing = the medium's default; images need a weights choice).
        batch_size: items per encoder call and per cache shard.
        store_dir: offline store root (None = `get_settings().store_dir`).
        out: extra copy of the item-vector artefact (the default location is always written).
        progress: show a progress bar.
    """

    media: tuple[str, ...] | None = None
    specs: Mapping[str, EncoderSpec] = field(default_factory=dict)
    batch_size: int = 32
    store_dir: Path | None = None
    out: Path | None = None
    progress: bool = True


@dataclass
class EmbedFailure:
    """One item whose content could not be embedded (and was skipped)."""

    medium: str
    item_id: str
    source: str
    reason: str


@dataclass
class MediumReport:
    """What happened to one medium: counts let a rerun prove it encoded nothing new."""

    medium: str
    encoder_version: str
    dim: int
    precomputed: bool
    with_content: int = 0
    embedded: int = 0
    encoded: int = 0
    reused: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass
class EmbedReport:
    dataset: str
    artefact: Path
    media: dict[str, MediumReport]
    failures: list[EmbedFailure]


def available_media(ds: Dataset) -> tuple[str, ...]:
    """Media the dataset has precomputed vectors or raw content for, in canonical order."""
    found = []
    for medium in ("text", "image", "audio"):
        if medium in ds.item_features or ds.items.select(_source_expr(medium).is_not_null().any()).item():
            found.append(medium)
    return tuple(found)


def _source_expr(medium: str) -> pl.Expr:
    if medium == "text":
        return pl.coalesce(pl.col("text"), pl.col("title"))  # a title alone is still text worth embedding
    return pl.col(SOURCE_COLUMN[medium])


def resolve_uri(uri: str, root: Path) -> Path:
    """Local path of an item URI: absolute, ``file://`` or relative to the dataset folder."""
    if uri.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    if "://" in uri:
        raise EncoderInputError("remote URI: the embed job reads local files only (download them first)")
    path = Path(uri).expanduser()
    return path if path.is_absolute() else root / path


def dataset_root(ds: Dataset) -> Path:
    """The folder relative URIs resolve against: where the dataset's files live."""
    return Path(ds.source_files[0]).parent if ds.source_files else Path.cwd()


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False, dynamic_ncols=True)


def embed_medium(ds: Dataset, medium: str, encoder: ContentEncoder, cache: EmbeddingCache, batch_size: int,
                 root: Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray, MediumReport, list[EmbedFailure]]:
    """Encode one medium's content for every item, through the cache. Returns (matrix, mask, report, failures)."""
    started = time.perf_counter()
    rows = ds.items.select("item_index", "item_id", _source_expr(medium).alias("source")).drop_nulls("source")
    report = MediumReport(medium, encoder.version, encoder.dim, precomputed=False, with_content=rows.height)
    failures: list[EmbedFailure] = []
    hashes: dict[int, str] = {}
    pending: dict[str, Any] = {}  # content hash -> prepared input, flushed every `batch_size`
    bad: dict[str, str] = {}  # content hash -> reason, so duplicates of a corrupt file are reported too

    def flush() -> None:
        if pending:
            keys = list(pending)
            cache.put(keys, encoder.encode_prepared([pending[k] for k in keys]))
            report.encoded += len(keys)
            pending.clear()

    with _progress(rows.height, f"embed {medium}", progress) as bar:
        for index, item_id, source in rows.iter_rows():
            bar.update(1)
            try:
                data = source.encode("utf-8") if medium == "text" else read_source_bytes(resolve_uri(source, root))
            except EncoderInputError as exc:
                failures.append(EmbedFailure(medium, item_id, source, str(exc)))
                continue
            digest = content_hash(data)
            if digest in bad:
                failures.append(EmbedFailure(medium, item_id, source, bad[digest]))
                continue
            if digest in cache or digest in pending:
                report.reused += 1
                hashes[index] = digest
                continue
            try:
                pending[digest] = encoder.prepare(source if medium == "text" else data)
            except EncoderInputError as exc:
                bad[digest] = str(exc)
                failures.append(EmbedFailure(medium, item_id, source, str(exc)))
                continue
            hashes[index] = digest
            if len(pending) >= batch_size:
                flush()
        flush()

    matrix = np.zeros((ds.n_items, encoder.dim), dtype=np.float32)
    mask = np.zeros(ds.n_items, dtype=bool)
    if hashes:
        indices = np.fromiter(hashes.keys(), dtype=np.int64, count=len(hashes))
        vectors, found = cache.get(list(hashes.values()))
        matrix[indices], mask[indices] = vectors, found
    report.embedded, report.failed = int(mask.sum()), len(failures)
    report.seconds = time.perf_counter() - started
    return matrix, mask, report, failures


def pass_through(ds: Dataset, medium: str) -> tuple[np.ndarray, np.ndarray, MediumReport, ContentEncoder]:
    """Precomputed vectors of a medium, looked up item by item through a `PrecomputedEncoder`."""
    started = time.perf_counter()
    mask = np.asarray(ds.feature_mask.get(medium, np.ones(ds.n_items, dtype=bool)), dtype=bool)
    encoder = build_encoder(medium, PrecomputedSpec(ds.item_features[medium], tuple(ds.item_ids), mask, source=ds.name))
    matrix = np.zeros((ds.n_items, encoder.dim), dtype=np.float32)
    rows = np.nonzero(mask)[0]
    matrix[rows] = encoder.encode(rows.tolist())
    report = MediumReport(medium, encoder.version, encoder.dim, precomputed=True, with_content=int(mask.sum()),
                          embedded=int(mask.sum()), seconds=time.perf_counter() - started)
    return matrix, mask, report, encoder


def _encoder_meta(encoder: ContentEncoder, precomputed: bool) -> dict[str, Any]:
    spec = getattr(encoder, "spec", None)
    described = spec_to_dict(spec) if isinstance(spec, (TextSpec, ImageSpec, AudioSpec, PrecomputedSpec)) else None
    return {"version": encoder.version, "dim": encoder.dim, "normalized": bool(encoder.normalized),
            "precomputed": precomputed, "spec": described}


def run_embed_job(dataset: str | Path | Dataset, config: EmbedConfig = EmbedConfig(),
                  encoders: Mapping[str, ContentEncoder] | None = None) -> EmbedReport:
    """Embed a dataset's item content and write the item-vector artefact.

    Args:
        dataset: registered name, folder, or a loaded `Dataset`.
        config: media, specs, batch size, store location; see `EmbedConfig`.
        encoders: ready encoders per medium, overriding `config.specs` (tests, benchmarks); media the
            dataset ships as precomputed vectors always pass through unchanged.

    Raises:
        ValueError: a requested medium has no content in this dataset.
        EncoderWeightsError: an encoder cannot be built (e.g. images without a weights choice),
            raised before any work starts.
    """
    from recsys.config import get_settings

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    store_dir = Path(config.store_dir or get_settings().store_dir)
    present = available_media(ds)
    media = tuple(config.media) if config.media else present
    absent = [m for m in media if m not in present]
    if absent:
        raise ValueError(f"dataset {ds.name} has no {', '.join(absent)} content (it has: {', '.join(present) or 'none'})")
    encoders = dict(encoders or {})
    for medium in media:  # build everything first: a bad option fails in a second, not after an hour
        if medium not in encoders and medium not in ds.item_features:
            encoders[medium] = build_encoder(medium, config.specs.get(medium))

    root = dataset_root(ds)
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reports: dict[str, MediumReport] = {}
    encoder_meta: dict[str, Any] = {}
    failures: list[EmbedFailure] = []
    for medium in media:
        if medium in ds.item_features:
            matrix, mask, report, encoder = pass_through(ds, medium)
        else:
            encoder = encoders[medium]
            cache = EmbeddingCache(store_dir / "embeddings", encoder.version, encoder.dim)
            matrix, mask, report, lost = embed_medium(ds, medium, encoder, cache, config.batch_size, root, config.progress)
            cache.compact()
            failures += lost
        results[medium], reports[medium] = (matrix, mask), report
        encoder_meta[medium] = _encoder_meta(encoder, report.precomputed)
        log.info("%s: %d/%d items embedded (%d encoded, %d reused, %d failed) with %s in %.1fs", medium,
                 report.embedded, ds.n_items, report.encoded, report.reused, report.failed, report.encoder_version,
                 report.seconds)

    path = item_vectors_path(store_dir, ds.name)
    if path.exists():  # keep media embedded by earlier runs (e.g. text, then `--media image`)
        try:
            previous, old_meta = read_item_vectors(path, ds.item_ids)
            for medium, pair in previous.items():
                if medium not in results:
                    results[medium] = pair
                    encoder_meta[medium] = old_meta.get("encoders", {}).get(medium)
        except (ValueError, KeyError, OSError) as exc:
            log.warning("replacing %s: %s", path, exc)
    meta = {"dataset": ds.name, "dataset_version": ds.version, "encoders": encoder_meta,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_item_vectors(path, ds.item_ids, results, meta)
    if config.out:
        write_item_vectors(Path(config.out), ds.item_ids, results, meta)
    failures_file = path.with_suffix(".failures.json")
    failures_file.write_text(json.dumps([asdict(f) for f in failures], indent=1))
    return EmbedReport(ds.name, path, reports, failures)


def load_item_content_vectors(dataset: str | Path | Dataset, store_dir: Path | None = None,
                              path: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Item content vectors for training: {medium: (float32 (n_items, d) by item_index, bool mask)}.

    Rows of items without that medium (or whose file was corrupt) are zeros with mask False.
    Raises FileNotFoundError if `recsys embed` has not run, ValueError if the artefact was made
    for a different item list.
    """
    vectors, _ = _read(dataset, store_dir, path)
    return vectors


def load_item_content_meta(dataset: str | Path | Dataset, store_dir: Path | None = None,
                           path: Path | None = None) -> dict[str, Any]:
    """Metadata of the artefact: per medium the encoder version, dim, and the spec to rebuild it
    with `build_encoder(medium, spec_from_dict(medium, meta["encoders"][medium]["spec"]))`."""
    _, meta = _read(dataset, store_dir, path)
    return meta


def _read(dataset: str | Path | Dataset, store_dir: Path | None, path: Path | None
          ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    from recsys.config import get_settings

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    path = Path(path) if path else item_vectors_path(Path(store_dir or get_settings().store_dir), ds.name)
    return read_item_vectors(path, ds.item_ids)
