"""Serving-side content path of a trained two-tower: encoder outputs of a medium -> the run's item space.

Rebuilt from `content_projection.pt` in the run directory (search queries, new items).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.artifact import USER_ENCODER_LOADERS, RunArtifact, l2_normalise
from recsys.models.config import ModelConfig
from recsys.models.fusion import MediumProjection
from recsys.models.popularity_prior import PopularityCoordinate
from recsys.models.two_tower import ServingTables, TwoTower
from recsys.models.user_tower import UserHistories, UserTower

PROJECTION_FILE = "content_projection.pt"


def projection_payload(projections: dict[str, MediumProjection], hidden: int, dim: int, pad: int = 0) -> dict[str, Any]:
    """`pad` zero coordinates are appended to projected queries (the popularity coordinate: a query has no prior)."""
    return {"dim": dim, "hidden": hidden, "pad": pad, "media": {
        m: {"in_dim": int(p.mean.shape[0]), "state": {k: v.detach().clone() for k, v in p.state_dict().items()}}
        for m, p in projections.items()}}


def ensemble_projection_payload(members: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    """`content_projection.pt` of an ensemble run: each member's projection and its weight (1/√T_k)."""
    return {"members": members, "weights": [float(w) for w in weights]}


_Member = tuple[dict[str, MediumProjection], int]
_PROJECTIONS: dict[tuple[str, float], tuple[list[_Member], list[float]]] = {}


def _build_member(saved: dict[str, Any]) -> _Member:
    built = {}
    for medium, entry in saved["media"].items():
        proj = MediumProjection(entry["in_dim"], saved["dim"], saved["hidden"]).eval()
        proj.load_state_dict(entry["state"])
        built[medium] = proj
    return built, int(saved.get("pad", 0))


def _projections(run_dir: Path) -> tuple[list[_Member], list[float]]:
    """(members, weights) of the run's content projection; a single tower is a one-member list."""
    path = run_dir / PROJECTION_FILE
    key = (str(path.resolve()), path.stat().st_mtime if path.exists() else 0.0)
    if key not in _PROJECTIONS:
        if not path.exists():
            _PROJECTIONS[key] = ([({}, 0)], [1.0])
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if "members" in saved:
                _PROJECTIONS[key] = ([_build_member(m) for m in saved["members"]], [float(w) for w in saved["weights"]])
            else:
                _PROJECTIONS[key] = ([_build_member(saved)], [1.0])
    return _PROJECTIONS[key]


def _project_member(member: _Member, medium: str, x: np.ndarray) -> np.ndarray:
    projections, pad = member
    proj = projections[medium]
    with torch.no_grad():
        projected = l2_normalise(proj(torch.as_tensor(x)).numpy())
    return np.concatenate([projected, np.zeros((len(projected), pad), np.float32)], axis=1) if pad else projected


def project_content(run: RunArtifact, medium: str, vectors: np.ndarray) -> np.ndarray:
    """Encoder outputs of `medium` (n, d_medium) -> the run's item space, L2-normalised (n, dim).

    For an ensemble run the query is projected by every member and concatenated with the
    members' weights, exactly like the item vectors (`recsys.models.ensemble`).

    Raises ValueError when the run has no projection for `medium` (e.g. it was trained without
    that medium) or the input width does not match the encoder the run was trained with.
    """
    members, weights = _projections(Path(run.run_dir))
    first = members[0][0]
    if medium not in first:
        raise ValueError(f"run {run.run_dir.name} has no {medium} projection (it has: {', '.join(sorted(first)) or 'none'})")
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if x.shape[1] != first[medium].mean.shape[0]:
        raise ValueError(f"{medium} vectors have width {x.shape[1]}, the run's {medium} encoder outputs {first[medium].mean.shape[0]}")
    parts = [_project_member(m, medium, x) for m in members]
    if len(parts) == 1:
        return parts[0]
    from recsys.models.ensemble import concat_members

    return concat_members(parts, weights)
