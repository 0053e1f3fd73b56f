"""Adding, replacing and taking down items while serving (`PUT` / `DELETE /v1/items/{id}`).

Order of a write, so that nothing is ever half-written:
1. validate and embed for every model version being served (encoder -> content path), in a
   worker thread; any problem is a 4xx naming it and nothing has been stored yet;
2. append the operation to the durable log (media files first, then one fsynced line);
3. apply it to each version's live catalogue (one snapshot swap each: readers see all or nothing);
4. mirror it into the online store (Redis), best effort: the log is the record.
Writes are serialised (one at a time): they are rare next to reads and the log needs an order.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.catalogue_store import mirror_online
from serving.catalogue_sync import Unembeddable, item_vector, medium_encoder, sync, vector_version
from serving.errors import ServingError
from serving.retriever import Retriever
from serving.versions import LiveModels

MEDIA = ("text", "image", "audio")
MAX_TEXT_CHARS = 20_000
MAX_METADATA_BYTES = 16 * 1024


@dataclass
class ItemInput:
    """What a client sent for one item: raw media (text str, image/audio bytes) and/or encoder
    outputs per medium (precomputed vectors), plus free metadata (``title`` is shown in answers)."""

    files: dict[str, str | bytes] = field(default_factory=dict)
    vectors: dict[str, list[float]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def media(self) -> list[str]:
        return sorted(set(self.files) | set(self.vectors))


def _bad(code: str, message: str, status: int = 422) -> ServingError:
    return ServingError(status, code, message)


def check_input(item: ItemInput) -> None:
    """Shape checks that need no model: an item has content, vectors are finite numbers, metadata is small."""
    if not item.media:
        raise _bad("empty_item", "an item needs at least one medium: a text, image or audio file, or "
                                 "features.{image,audio,text} vectors")
    both = sorted(set(item.files) & set(item.vectors))
    if both:
        raise _bad("invalid_item", f"{', '.join(both)}: send a file or a vector per medium, not both")
    unknown = [m for m in item.media if m not in MEDIA]
    if unknown:
        raise _bad("invalid_item", f"unknown media {unknown}; expected {list(MEDIA)}")
    for medium, vector in item.vectors.items():
        if not isinstance(vector, list) or not vector or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                for v in vector):
            raise _bad("invalid_vector", f"features.{medium}: must be a non-empty list of numbers")
        if not np.isfinite(np.asarray(vector, np.float64)).all():
            raise _bad("invalid_vector", f"features.{medium}: contains NaN or infinite values")
    for medium, data in item.files.items():
        if not data:
            raise _bad("invalid_item_content", f"the {medium} file is empty")
    text = item.files.get("text")
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        raise _bad("invalid_item_content", f"text: at most {MAX_TEXT_CHARS} characters")
    if not isinstance(item.metadata, dict):
        raise _bad("invalid_item", "metadata: must be a JSON object")
    if len(json.dumps(item.metadata, default=str)) > MAX_METADATA_BYTES:
        raise _bad("invalid_item", f"metadata: at most {MAX_METADATA_BYTES} bytes of JSON")
    title = item.metadata.get("title")
    if title is not None and not isinstance(title, str):
        raise _bad("invalid_item", "metadata.title: must be a string")


def encoder_outputs(retriever: Retriever, item: ItemInput, made: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """medium -> (feature key, encoder output) for this version; `made` caches outputs by key across versions."""
    from recsys.encoders import EncoderInputError

    out = {}
    for medium in item.media:
        try:
            key, encoder = medium_encoder(retriever, medium)
        except Unembeddable as err:
            raise _bad("medium_not_supported", str(err)) from err
        width = retriever.content.in_dims[medium]
        if medium in item.vectors:
            vector = np.asarray(item.vectors[medium], np.float32)
            if vector.shape != (width,):
                raise _bad("invalid_vector", f"features.{medium}: {len(item.vectors[medium])} values, model "
                                             f"{retriever.version} expects {width}")
            out[medium] = (key, vector)
            continue
        if encoder is None:
            raise _bad("medium_not_supported", f"model {retriever.version} embeds {medium} from precomputed vectors "
                                               f"only: send features.{medium} ({width} numbers) instead of a file")
        if key not in made:
            try:
                made[key] = encoder.encode_one(item.files[medium])
            except EncoderInputError as err:
                raise _bad("invalid_item_content", f"the {medium} file cannot be read: {err}") from err
        out[medium] = (key, made[key])
    return out


def item_digest(item: ItemInput, features: dict[str, dict[str, list[float]]]) -> str:
    payload = json.dumps({"metadata": item.metadata, "media": item.media,
                          "features": {m: sorted(f) for m, f in features.items()},
                          "vectors": {m: hashlib.sha256(np.asarray(v[sorted(v)[0]], np.float32).tobytes()).hexdigest()
                                      for m, v in features.items()}}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def put_op(item_id: str, item: ItemInput, features: dict[str, dict[str, list[float]]], files: dict[str, str],
           digest: str, **extra: Any) -> dict[str, Any]:
    """The log record of a put (see `serving.catalogue_store`)."""
    return {"op": "put", "item_id": item_id, "ts": time.time(), "media": item.media, "title": item.metadata.get("title"),
            "metadata": item.metadata, "features": features, "files": files, "digest": digest, **extra}


class CatalogueWriter:
    """The write side of the live catalogue, shared by the routes (see module docstring for the order)."""

    def __init__(self, models: LiveModels, link: Any, namespace: str):
        self.models, self.link, self.namespace = models, link, namespace
        self._lock = asyncio.Lock()

    def _served(self) -> list[tuple[str, Retriever]]:
        out = []
        for variant in self.models.variants:
            retriever = self.models.get(variant)
            sync(retriever)
            out.append((variant, retriever))
        return out

    def _embed(self, item: ItemInput) -> tuple[dict[int, np.ndarray], dict[str, dict[str, list[float]]]]:
        """Vectors per served version (by id of its retriever) and the encoder outputs to log."""
        made: dict[str, np.ndarray] = {}
        vectors: dict[int, np.ndarray] = {}
        features: dict[str, dict[str, list[float]]] = {}
        for _, retriever in self._served():
            outputs = encoder_outputs(retriever, item, made)
            try:
                vectors[id(retriever)] = item_vector(retriever, {m: v for m, (_, v) in outputs.items()})
            except Unembeddable as err:
                raise _bad("medium_not_supported", str(err)) from err
            for medium, (key, vector) in outputs.items():
                features.setdefault(medium, {})[key] = [round(float(x), 7) for x in vector]
        return vectors, features

    async def put(self, item_id: str, item: ItemInput) -> tuple[int, dict[str, Any]]:
        """(status, body): 201 created, 200 replaced or unchanged."""
        check_input(item)
        async with self._lock:
            vectors, features = await asyncio.to_thread(self._embed, item)
            served = self._served()
            digest = item_digest(item, features)
            log = served[0][1].catalogue_log
            current = log.current().get(item_id)
            created = all(r.lookup(item_id) is None for _, r in served)
            if current is not None and current.get("digest") == digest and not created:
                status = "unchanged"
            else:
                files = await asyncio.to_thread(
                    lambda: {m: log.save_media(d.encode("utf-8") if isinstance(d, str) else d) for m, d in item.files.items()})
                op = log.append(put_op(item_id, item, features, files, digest))
                for _, retriever in served:
                    sync(retriever, {op["seq"]: vectors[id(retriever)]} if id(retriever) in vectors else None)
                await mirror_online(self.link, self.namespace, served[0][1].run.dataset, op)
                status = "created" if created else "updated"
        first = served[0][1]
        body = {"item_id": item_id, "status": status, "media": item.media, "model_version": first.version,
                "vector_version": vector_version(first, vectors[id(first)]),
                "vector_versions": {v: vector_version(r, vectors[id(r)]) for v, r in served if id(r) in vectors}}
        return (201 if status == "created" else 200), body

    async def delete(self, item_id: str) -> dict[str, Any]:
        """Take an item down everywhere; 404 when no served version has it."""
        async with self._lock:
            served = self._served()
            if all(r.lookup(item_id) is None for _, r in served):
                raise ServingError(404, "unknown_item", f"item '{item_id}' is not in the catalogue (or already taken down)")
            log = served[0][1].catalogue_log
            op = log.append({"op": "delete", "item_id": item_id, "ts": time.time()})
            for _, retriever in served:
                sync(retriever)
            await mirror_online(self.link, self.namespace, served[0][1].run.dataset, op)
        return {"item_id": item_id, "status": "deleted", "model_versions": {v: r.version for v, r in served}}
