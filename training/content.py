"""Item content vectors for training: precomputed features, or the embed job's artefact.

TikTok ships its image/audio features; ML-100K has only text, which `recsys embed` turns into
all-MiniLM-L6-v2 vectors. If that artefact is missing, this runs the embed job for the missing
media (text: ~10 s for ML-100K on 2 cores) rather than failing, and records which encoder made
each medium so serving can embed queries with the same one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data import Dataset

log = logging.getLogger(__name__)


@dataclass
class ItemContent:
    """medium -> (n_items, d) float32 features, masks of items that have them, and encoder descriptions."""

    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    encoders: dict[str, Any]


def _from_embed_job(ds: Dataset, media: list[str], store_dir: Path | None) -> ItemContent:
    from training.embed_job import EmbedConfig, load_item_content_meta, load_item_content_vectors, run_embed_job

    try:
        vectors, meta = load_item_content_vectors(ds, store_dir), load_item_content_meta(ds, store_dir)
        missing = [m for m in media if m not in vectors]
    except (FileNotFoundError, ValueError):
        missing = list(media)
    if missing:
        log.info("no embedded %s vectors for %s in the store; running the embed job", "/".join(missing), ds.name)
        run_embed_job(ds, EmbedConfig(media=tuple(missing), store_dir=store_dir, progress=False))
        vectors, meta = load_item_content_vectors(ds, store_dir), load_item_content_meta(ds, store_dir)
    encoders = meta.get("encoders", {})
    return ItemContent({m: np.asarray(vectors[m][0], np.float32) for m in media},
                       {m: np.asarray(vectors[m][1], bool) for m in media},
                       {m: encoders.get(m, "embed-job") for m in media})


def load_item_content(ds: Dataset, media: list[str] | None = None, store_dir: Path | None = None) -> ItemContent:
    """Content of every requested medium (default: all the dataset has), aligned to item_index."""
    available = [m for m, mask in ds.feature_mask.items() if np.asarray(mask).any()]
    media = list(media) if media is not None else available
    unknown = [m for m in media if m not in available]
    if unknown:
        raise ValueError(f"dataset {ds.name} has no {', '.join(unknown)} items (it has: {', '.join(available)})")
    features, masks, encoders = {}, {}, {}
    for medium in [m for m in media if m in ds.item_features]:
        features[medium] = np.asarray(ds.item_features[medium], np.float32)
        masks[medium] = np.asarray(ds.feature_mask[medium], bool)
        encoders[medium] = {"kind": "precomputed", "source": f"{ds.name}/{medium}_feat.npy",
                            "shape": list(features[medium].shape)}
    rest = [m for m in media if m not in ds.item_features]
    if rest:
        embedded = _from_embed_job(ds, rest, store_dir)
        features.update(embedded.features)
        masks.update(embedded.masks)
        encoders.update(embedded.encoders)
    return ItemContent({m: features[m] for m in media}, {m: masks[m] for m in media}, {m: encoders[m] for m in media})
