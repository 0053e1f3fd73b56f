"""Turning catalogue operations into one model version's live items (embedding included).

A put operation carries, per medium, encoder outputs keyed by the encoder that made them
(``features[medium][encoder_version]``) and the raw media file. For a given version each medium
is embedded by that version's recorded encoder: a stored output of the same encoder version is
reused (precomputed vectors are keyed ``precomputed-d<width>``), else the stored file is
re-encoded. The outputs go through the version's content path (`recsys.models.content_projection`)
to an item vector. An operation a version cannot embed (a medium it was not trained with) is
counted but not served by that version, and said in the log.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from recsys.config import get_settings
from feature_store.catalogue_log import CatalogueLog
from serving.retriever import Retriever
from serving.search import ENCODERS, recorded_spec

log = logging.getLogger(__name__)


class Unembeddable(ValueError):
    """This model version cannot embed this medium or input; the message says why."""


def medium_encoder(retriever: Retriever, medium: str) -> tuple[str, Any]:
    """(feature key, encoder or None for precomputed vectors) this version embeds `medium` with."""
    content = retriever.content
    if content is None:
        raise Unembeddable(f"model {retriever.version} has no content path (content_projection.pt): "
                           "it cannot embed new items")
    if medium not in content.in_dims:
        raise Unembeddable(f"model {retriever.version} cannot embed {medium}: it was trained with "
                           f"{', '.join(content.media) or 'no media'}")
    spec = recorded_spec(retriever.run, medium)
    if spec is None:
        raise Unembeddable(f"model {retriever.version} records no {medium} encoder")
    width = content.in_dims[medium]
    if spec.get("kind") == "precomputed":
        return f"precomputed-d{width}", None
    try:
        encoder = ENCODERS.get(medium, spec)
    except ValueError as err:
        raise Unembeddable(f"the {medium} encoder of model {retriever.version} cannot be built here ({err})") from err
    recorded = _recorded_version(retriever, medium)
    if recorded and recorded != encoder.version:
        raise Unembeddable(f"the {medium} encoder here is {encoder.version} but model {retriever.version} was "
                           f"trained on {recorded}")
    if encoder.dim != width:
        raise Unembeddable(f"the {medium} encoder outputs {encoder.dim} values, model {retriever.version} expects {width}")
    return encoder.version, encoder


def _recorded_version(retriever: Retriever, medium: str) -> str | None:
    entry = (retriever.run.meta.get("encoders") or {}).get(medium)
    return entry.get("version") if isinstance(entry, dict) else None


def precomputed_width(retriever: Retriever, medium: str) -> int | None:
    """Width of `medium` vectors this version accepts as given (precomputed media only)."""
    key, encoder = medium_encoder(retriever, medium)
    return retriever.content.in_dims[medium] if encoder is None else None


def vector_version(retriever: Retriever, vector: np.ndarray) -> str:
    """Names the item vector: the model version and a hash of the vector (same content, same name)."""
    return f"{retriever.version}:{hashlib.sha256(np.ascontiguousarray(vector, np.float32).tobytes()).hexdigest()[:12]}"


def op_features(retriever: Retriever, op: dict[str, Any], media_log: CatalogueLog | None) -> dict[str, np.ndarray]:
    """Encoder outputs per medium of a put operation, for this version (re-encoding stored media if needed)."""
    features: dict[str, np.ndarray] = {}
    for medium in op["media"]:
        key, encoder = medium_encoder(retriever, medium)
        stored = (op.get("features") or {}).get(medium) or {}
        if key in stored:
            features[medium] = np.asarray(stored[key], np.float32)
            continue
        path = (op.get("files") or {}).get(medium)
        if encoder is None or path is None or media_log is None:
            raise Unembeddable(f"no {key} vector and no {medium} file to make one from")
        data = media_log.read_media(path)
        features[medium] = encoder.encode_one(data.decode("utf-8") if medium == "text" else data)
    return features


def item_vector(retriever: Retriever, features: dict[str, np.ndarray]) -> np.ndarray:
    try:
        vector = retriever.content.embed_item(features)
    except ValueError as err:
        raise Unembeddable(str(err)) from err
    if vector.shape != (retriever.index.dim,) or not np.isfinite(vector).all():
        raise Unembeddable(f"the content path gave a vector of shape {vector.shape} (or non-finite) "
                           f"for an index of width {retriever.index.dim}")
    return vector


def apply_op(retriever: Retriever, op: dict[str, Any], media_log: CatalogueLog | None,
             vector: np.ndarray | None = None) -> None:
    """Apply one logged operation to `retriever`'s live catalogue (`vector`: already computed for it)."""
    if op["op"] == "delete":
        retriever.live.delete(op["item_id"])
        return
    try:
        if vector is None:
            vector = item_vector(retriever, op_features(retriever, op, media_log))
    except (Unembeddable, ValueError) as err:
        log.warning("catalogue op %s (%s): not served by model %s: %s", op.get("seq"), op["item_id"],
                    retriever.version, err)
        retriever.live.delete(op["item_id"])  # an older vector of this item must not outlive the new content
        return
    retriever.live.put(op["item_id"], vector, list(op["media"]), op.get("title"), vector_version(retriever, vector),
                       added_at=float(op.get("ts", 0.0)))


def sync(retriever: Retriever, precomputed: dict[int, np.ndarray] | None = None, max_age_s: float = 0.0) -> None:
    """Apply the log's operations this version has not applied yet (cheap when caught up).

    `max_age_s`: how old the log file's last stat may be (`CatalogueLog.refresh`); 0 stats now."""
    media_log = getattr(retriever, "catalogue_log", None)
    if media_log is None:
        return
    media_log.refresh(max_age_s)
    if retriever.live.snapshot.generation >= len(media_log):
        return  # the common case: no lock taken
    with retriever.live.sync_lock:  # one thread applies each operation exactly once
        while retriever.live.snapshot.generation < len(media_log):
            op = media_log.ops[retriever.live.snapshot.generation]
            apply_op(retriever, op, media_log, (precomputed or {}).get(op["seq"]))


def folded_ops(retriever: Retriever, media_log: CatalogueLog) -> int:
    """How many of the log's first operations the run was trained with (`recsys train` folds the log
    into its catalogue and records the prefix in run.json): those need no replay. 0 when the run
    folded none, or a prefix of another log (then everything is replayed, which is always safe)."""
    folded = retriever.run.meta.get("catalogue_log")
    if not isinstance(folded, dict) or not folded.get("ops"):
        return 0
    n = int(folded["ops"])
    media_log.refresh()
    if n > len(media_log) or media_log.prefix_digest(n) != folded.get("digest"):
        log.warning("catalogue: model %s was trained with %d operations of a catalogue log that is not %s's "
                    "prefix; replaying the whole log", retriever.version, n, media_log.path)
        return 0
    return n


def replay_log(retriever: Retriever) -> None:
    """Attach the dataset's catalogue log to a freshly loaded version and replay what its training
    did not already fold in (load time, off the loop)."""
    media_log = CatalogueLog.open(get_settings().store_dir, retriever.run.dataset)
    retriever.catalogue_log = media_log
    skipped = folded_ops(retriever, media_log)
    if skipped:
        retriever.live.start_at(skipped)
    if len(media_log) > skipped:
        sync(retriever)
    if len(media_log):
        log.info("catalogue: %d operations in %s's log, %d folded in by training, %d replayed into %s "
                 "(%d live items, %d taken down)", len(media_log), retriever.run.dataset, skipped,
                 len(media_log) - skipped, retriever.version, len(retriever.live.snapshot.row_of),
                 len(retriever.live.snapshot.base_deleted_ids))
