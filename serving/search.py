"""Content search: a query text, image or audio clip -> items of any medium.

The query goes through the same content encoder the run's items were embedded with (the spec is
recorded in the run: `encoders.<medium>.spec`, as written by the embed job) and then through the
run's item tower (`recsys.models.project_content`), landing in the item space where the index
lives. The same encoders embed new items (`serving.catalogue_sync`), so both share `ENCODERS`.
When a run cannot do that for a medium (no items of it, precomputed features that no
encoder can reproduce, no projection for it) the answer is a 422 that says which and why.
Encoders are heavy (seconds to load), so each is built once per (medium, spec) and kept.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

import numpy as np

from recsys.artifact import RunArtifact, l2_normalise
from serving.errors import ServingError
from serving.retriever import Retriever

log = logging.getLogger(__name__)


def _unsupported(retriever: Retriever, medium: str, why: str) -> ServingError:
    return ServingError(422, "medium_not_supported",
                        f"model {retriever.version} (dataset {retriever.run.dataset}) cannot search by {medium}: {why}")


def recorded_spec(run: RunArtifact, medium: str) -> dict[str, Any] | None:
    """The encoder spec the run's `medium` item vectors were made with (run.json or config.toml)."""
    for source in (run.meta, run.config):
        encoders = source.get("encoders") if isinstance(source, dict) else None
        if isinstance(encoders, str):
            try:
                encoders = json.loads(encoders)
            except ValueError:
                encoders = None
        entry = encoders.get(medium) if isinstance(encoders, dict) else None
        if isinstance(entry, dict):
            return entry.get("spec", entry)
    return None


class EncoderPool:
    """Content encoders shared by search queries and new items, built once per (medium, spec) (thread-safe)."""

    def __init__(self) -> None:
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, medium: str, spec: dict[str, Any]) -> Any:
        """The encoder for a recorded spec; ValueError when it cannot be built here."""
        from recsys.encoders import EncoderWeightsError, build_encoder, spec_from_dict

        key = f"{medium}:{json.dumps(spec, sort_keys=True, default=str)}"
        with self._lock:
            if key not in self._encoders:
                try:
                    self._encoders[key] = build_encoder(medium, spec_from_dict(medium, spec))
                except (EncoderWeightsError, ValueError, TypeError, ImportError) as err:
                    raise ValueError(str(err)) from err
                log.info("built %s encoder %s", medium, self._encoders[key])
            return self._encoders[key]


ENCODERS = EncoderPool()


def search_problem(retriever: Retriever, medium: str) -> str | None:
    """Why `retriever`'s model cannot embed a search query of `medium`, or None when it can (as far
    as the run says: whether the encoder builds on this machine shows on the first query)."""
    if medium not in retriever.media_now():
        return f"its catalogue has no {medium} items (it has: {', '.join(sorted(retriever.media_now())) or 'none'})"
    spec = recorded_spec(retriever.run, medium)
    if spec is None:
        return "the run records no content encoder for this medium"
    if spec.get("kind") == "precomputed":
        return (f"its {medium} vectors are precomputed features ({spec.get('source', 'external')}) that no encoder "
                "here can reproduce")
    if retriever.content is None:
        return "the run has no content path (content_projection.pt)"
    if medium not in retriever.content.in_dims:
        return f"its content path has no {medium} projection (trained with {', '.join(retriever.content.media)})"
    return None


class ContentSearch:
    """Query side of content search: the run's encoder, then its content path (blocking: worker thread)."""

    def query_vector(self, retriever: Retriever, medium: str, payload: str | bytes) -> np.ndarray:
        """Embed one query into `retriever`'s item space (blocking: call from a worker thread)."""
        problem = search_problem(retriever, medium)
        if problem is not None:
            raise _unsupported(retriever, medium, problem)
        spec = recorded_spec(retriever.run, medium)
        try:
            encoder = ENCODERS.get(medium, spec)
        except ValueError as err:
            raise _unsupported(retriever, medium, f"its {medium} encoder cannot be built here ({err})") from err
        from recsys.encoders import EncoderInputError

        try:
            raw = encoder.encode_one(payload)
        except EncoderInputError as err:
            raise ServingError(422, "invalid_query_content", f"the {medium} query cannot be read: {err}") from err
        try:
            projected = np.asarray(retriever.content.project(medium, raw[None, :]), dtype=np.float32)
        except ValueError as err:
            raise _unsupported(retriever, medium, str(err)) from err
        return l2_normalise(projected.reshape(1, -1))[0]
