"""Serving-side content path of a trained two-tower: encoder outputs -> the run's item space.

`content_projection.pt` in the run directory carries what the item tower does to content, and
nothing that needs the training data: per-medium projections (with their standardisation
buffers), the fusion that combines the media an item has, and the popularity coordinate a
never-interacted item gets. From it a server turns

* a search query of one medium into a query vector (`ContentPath.project`), and
* a new item's media into an item vector, exactly as the tower would have embedded it with no
  ID row and no interactions (`ContentPath.embed_item`).

`load_content_path` validates the file completely, so a corrupt or inconsistent file fails the
load of the run (a `RunDirError` naming it), never a request. Loaded paths are kept in a small
LRU keyed by (file, mtime): model switches do not grow memory without bound.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.artifact import RunArtifact, RunDirError, l2_normalise
from recsys.models.closed_form import new_item_part
from recsys.models.fusion import FUSIONS, MediumProjection

PROJECTION_FILE = "content_projection.pt"
CACHE_SIZE = 4  # content paths kept loaded (current + previous versions of both A/B variants)


def projection_payload(projections: dict[str, MediumProjection], hidden: int, dim: int, pad: int = 0, *,
                       fusion: nn.Module | None = None, fusion_kind: str | None = None,
                       media_order: list[str] | None = None, new_item_coordinate: float | None = None) -> dict[str, Any]:
    """What `content_projection.pt` holds for one tower.

    `pad` coordinates follow the content part (the popularity coordinate): a query gets zeros there
    (a query has no prior), a new item gets `new_item_coordinate` (the prior of a zero train count).
    """
    payload: dict[str, Any] = {"dim": dim, "hidden": hidden, "pad": pad, "media": {
        m: {"in_dim": int(p.mean.shape[0]), "state": {k: v.detach().clone() for k, v in p.state_dict().items()}}
        for m, p in projections.items()}}
    if fusion is not None:
        payload["fusion"] = {"kind": fusion_kind, "media": list(media_order or projections),
                             "state": {k: v.detach().clone() for k, v in fusion.state_dict().items()}}
    if new_item_coordinate is not None:
        payload["new_item_coordinate"] = float(new_item_coordinate)
    return payload


def ensemble_projection_payload(members: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    """`content_projection.pt` of an ensemble run: each member's projection and its weight (1/√T_k)."""
    return {"members": members, "weights": [float(w) for w in weights]}


@dataclass
class TowerContent:
    """One tower's content path (an ensemble has several)."""

    dim: int
    pad: int
    projections: dict[str, MediumProjection]
    fusion: nn.Module | None
    fusion_media: list[str]
    new_item_coordinate: float | None

    def project(self, medium: str, x: np.ndarray) -> np.ndarray:
        """Query vectors: projection, L2, zero pad."""
        with torch.no_grad():
            projected = l2_normalise(self.projections[medium](torch.as_tensor(x)).numpy())
        return np.concatenate([projected, np.zeros((len(projected), self.pad), np.float32)], axis=1) if self.pad else projected

    @property
    def can_fuse(self) -> bool:
        return self.fusion is not None or len(self.projections) == 1

    def embed_items(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        """Items' vectors (n, dim + pad) from encoder outputs per medium (n, d_m) and which items have each
        medium, as the tower embeds an item with no ID and no interactions."""
        media = [m for m in (self.fusion_media or sorted(self.projections)) if m in features]
        n = len(next(iter(features.values())))
        with torch.no_grad():
            projected = {m: self.projections[m](torch.as_tensor(features[m], dtype=torch.float32)) for m in media}
            if self.fusion is not None:
                stacked = torch.stack([projected.get(m, torch.zeros(n, self.dim)) for m in self.fusion_media], dim=1)
                mask = torch.stack([torch.as_tensor(present[m], dtype=torch.bool) if m in projected
                                    else torch.zeros(n, dtype=torch.bool) for m in self.fusion_media], dim=1)
                content = self.fusion(stacked * mask.unsqueeze(-1), mask)
            else:  # a single-medium tower has no fusion module
                content = projected[media[0]]
        unit = l2_normalise(content.numpy())
        if not self.pad:
            return unit
        prior = np.zeros((n, self.pad), np.float32)
        if self.new_item_coordinate is not None:
            prior[:, -1] = self.new_item_coordinate
        rest = np.sqrt(np.maximum(1.0 - prior[:, -1:] ** 2, 1e-6))
        return l2_normalise(np.concatenate([unit * rest, prior], axis=1))


def closed_form_content_payload(width: int) -> dict[str, Any]:
    """`content_projection.pt`'s entry for the closed-form member (`recsys.models.closed_form`): no content path."""
    return {"closed_form": True, "width": int(width)}


@dataclass
class ClosedFormContent:
    """The closed-form member's part of content vectors: it reads no content, so a query gets zeros (it
    scores nothing there) and a new item the member's unit "never seen" coordinate (scores 0 for everyone)."""

    width: int
    can_fuse: bool = True

    def project(self, medium: str, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), self.width), np.float32)

    def embed_items(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        return new_item_part(self.width - 1, len(next(iter(features.values()))))


class ContentPath:
    """A run's content path (single tower or ensemble) as loaded from `content_projection.pt`.

    Example::

        path = load_content_path(run_dir); item_vector = path.embed_item({"image": v_img, "audio": v_aud})
    """

    def __init__(self, towers: list[TowerContent | ClosedFormContent], weights: list[float], source: Path):
        self.towers, self.weights, self.source = towers, weights, source
        first = next(t for t in towers if isinstance(t, TowerContent))
        self.media = sorted(first.projections)
        self.in_dims = {m: int(p.mean.shape[0]) for m, p in first.projections.items()}

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        if len(parts) == 1:
            return parts[0]
        from recsys.models.ensemble import concat_members

        return concat_members(parts, self.weights)

    def check_medium(self, medium: str, width: int) -> None:
        """ValueError naming the problem when `medium` vectors of `width` cannot enter this path."""
        if medium not in self.in_dims:
            raise ValueError(f"run {self.source.parent.name} has no {medium} projection "
                             f"(it has: {', '.join(self.media) or 'none'})")
        if width != self.in_dims[medium]:
            raise ValueError(f"{medium} vectors have width {width}, the run's {medium} encoder outputs {self.in_dims[medium]}")

    def project(self, medium: str, vectors: np.ndarray) -> np.ndarray:
        """Encoder outputs of `medium` (n, d_medium) -> L2-normalised query vectors in the item space."""
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        self.check_medium(medium, x.shape[1])
        return self._combine([t.project(medium, x) for t in self.towers])

    @property
    def can_fuse(self) -> bool:
        """Whether items with several media can be embedded (the run recorded its fusion)."""
        return all(t.can_fuse for t in self.towers)

    def embed_item(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """A new item's unit vector in the item space from its encoder outputs per medium."""
        if not features:
            raise ValueError("an item needs at least one medium")
        for medium, vector in features.items():
            self.check_medium(medium, int(np.asarray(vector).shape[-1]))
        if len(features) > 1 and not self.can_fuse:
            raise ValueError(f"run {self.source.parent.name} records no fusion: it can embed items of one medium only")
        clean = {m: np.asarray(v, dtype=np.float32).reshape(1, -1) for m, v in features.items()}
        return self.embed_items(clean, {m: np.ones(1, bool) for m in clean})[0]

    def embed_items(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
        """Batch form of `embed_item`: (n, d_m) outputs per medium and (n,) presence masks -> (n, dim)."""
        return self._combine([t.embed_items(features, present) for t in self.towers])


def _tower(saved: dict[str, Any], where: Path) -> TowerContent:
    projections = {}
    for medium, entry in saved["media"].items():
        proj = MediumProjection(int(entry["in_dim"]), int(saved["dim"]), int(saved["hidden"])).eval()
        proj.load_state_dict(entry["state"])
        projections[medium] = proj
    fusion, fusion_media = None, []
    if saved.get("fusion"):
        entry = saved["fusion"]
        if entry["kind"] not in FUSIONS:
            raise ValueError(f"unknown fusion kind {entry['kind']!r}")
        fusion_media = list(entry["media"])
        missing = [m for m in fusion_media if m not in projections]
        if missing:
            raise ValueError(f"fusion names media without a projection: {missing}")
        fusion = FUSIONS[entry["kind"]](len(fusion_media), int(saved["dim"])).eval()
        fusion.load_state_dict(entry["state"])
    coordinate = saved.get("new_item_coordinate")
    if coordinate is not None and not (np.isfinite(coordinate) and -1.0 < float(coordinate) < 1.0):
        raise ValueError(f"new_item_coordinate {coordinate} is not in (-1, 1)")
    tower = TowerContent(int(saved["dim"]), int(saved.get("pad", 0)), projections, fusion, fusion_media,
                         None if coordinate is None else float(coordinate))
    for medium, proj in projections.items():  # every weight finite, and a probe goes through
        for name, tensor in proj.state_dict().items():
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{medium} projection {name} holds NaN or infinite values")
        probe = tower.project(medium, np.zeros((1, int(proj.mean.shape[0])), np.float32))
        assert probe.shape == (1, tower.dim + tower.pad)
    return tower


def _read(path: Path) -> ContentPath:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict):
            raise ValueError(f"expected a dict, got {type(saved).__name__}")
        if "members" in saved:
            towers = [ClosedFormContent(int(m["width"])) if m.get("closed_form") else _tower(m, path)
                      for m in saved["members"]]
            weights = [float(w) for w in saved["weights"]]
            if len(weights) != len(towers) or not towers:
                raise ValueError(f"{len(towers)} members but {len(weights)} weights")
        else:
            towers, weights = [_tower(saved, path)], [1.0]
        media = {tuple(sorted(t.projections)) for t in towers if isinstance(t, TowerContent)}
        if len(media) != 1:
            raise ValueError("ensemble members project different media" if media else "no member has a content path")
    except Exception as exc:  # noqa: BLE001  (truncated zip, foreign pickle, missing keys, wrong shapes)
        raise RunDirError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
    return ContentPath(towers, weights, path)


_CACHE: OrderedDict[tuple[str, int], ContentPath | None] = OrderedDict()
_CACHE_LOCK = Lock()


def load_content_path(run_dir: Path | str) -> ContentPath | None:
    """The run's content path (None when the run has no `content_projection.pt`); raises `RunDirError`
    naming the file when it is corrupt. At most `CACHE_SIZE` paths stay loaded (LRU)."""
    path = Path(run_dir) / PROJECTION_FILE
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    loaded = _read(path) if path.exists() else None
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def cached_paths() -> int:
    """How many content paths are held in memory (bounded by `CACHE_SIZE`)."""
    return len(_CACHE)


def project_content(run: RunArtifact, medium: str, vectors: np.ndarray) -> np.ndarray:
    """Encoder outputs of `medium` (n, d_medium) -> the run's item space, L2-normalised (n, dim).

    For an ensemble run the query is projected by every member and concatenated with the
    members' weights, exactly like the item vectors (`recsys.models.ensemble`).

    Raises ValueError when the run has no projection for `medium` (e.g. it was trained without
    that medium) or the input width does not match the encoder the run was trained with.
    """
    path = load_content_path(run.run_dir)
    if path is None:
        raise ValueError(f"run {Path(run.run_dir).name} has no {PROJECTION_FILE} (no content path)")
    return path.project(medium, vectors)
