"""An ensemble of independently seeded two-towers that still serves as ONE two-tower.

Why: on TikTok a single tower's test Recall@20 moves by ~0.003 from seed to seed and early
stopping picks epochs 1-9, so much of what one tower learns is initialisation noise. Averaging the
scores of K members removes it (3 members at dim 256: valid NDCG@20 +0.004 over the best single
member, see BENCHMARKS.md). A sum of dot products is a dot product of concatenations:

    score(u, i) = Σ_k u_k·i_k / T_k = [u_1/√T_1 | ... | u_K/√T_K] · [i_1/√T_1 | ... | i_K/√T_K]

so the run stores concatenated vectors and a nearest-neighbour index serves them unchanged. Each
member's part is unit-norm, so every concatenated vector has the same norm √Σ 1/T_k; the run
stores them L2-normalised (same ranking) with temperature 1 / Σ_k 1/T_k (same scores).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.artifact import USER_ENCODER_LOADERS, RunArtifact, l2_normalise

ENSEMBLE_KIND = "two_tower_ensemble"


def member_weights(temperatures: list[float]) -> np.ndarray:
    """Scale of member k's part: 1/√T_k, so the concatenated dot product sums the members' logits."""
    return 1.0 / np.sqrt(np.asarray(temperatures, dtype=np.float64))


def ensemble_temperature(temperatures: list[float]) -> float:
    """Temperature of the normalised concatenation: unit vectors · unit vectors / T = Σ_k member logits."""
    return float(1.0 / np.sum(1.0 / np.asarray(temperatures, dtype=np.float64)))


def concat_members(parts: list[np.ndarray], weights: np.ndarray | list[float]) -> np.ndarray:
    """[w_1·x_1 | ... | w_K·x_K], L2-normalised per row (rows that are all zero stay zero)."""
    return l2_normalise(np.concatenate([float(w) * np.asarray(p, np.float32) for p, w in zip(parts, weights)], axis=1))


class MemberConcat(nn.Module):
    """The members' served towers as one module: [w_1 u_1 | ... | w_K u_K], L2-normalised per row.

    Each member is the `ServedUserTower` its training produced (or the closed-form member's
    `recsys.models.closed_form.HistoryTableTower`); this only concatenates their outputs (see module
    docstring), so an ensemble serves through the same code as one tower.
    """

    def __init__(self, members: list[nn.Module], weights: np.ndarray | list[float]):
        super().__init__()
        assert len(members) == len(weights) and members, "one weight per member, at least one member"
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights, dtype=np.float32)))

    @property
    def n_items(self) -> int:
        return int(self.members[0].n_items)

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, segment: torch.Tensor,
                age: torch.Tensor) -> torch.Tensor:
        parts = [w * m(items, lengths, segment, age) for m, w in zip(self.members, self.weights)]
        return nn.functional.normalize(torch.cat(parts, dim=1), dim=1)


def ensemble_payload(member_payloads: list[dict[str, Any]], weights: np.ndarray | list[float]) -> dict[str, Any]:
    """What `user_encoder.pt` holds for an ensemble: each member's own payload and its weight."""
    return {"kind": ENSEMBLE_KIND, "members": member_payloads, "weights": [float(w) for w in weights]}


def member_module(payload: dict[str, Any]) -> nn.Module:
    """One member's served module from its payload: a trained tower, or the closed-form EASE member."""
    from recsys.models.closed_form import CLOSED_FORM_KIND, HistoryTableTower  # noqa: PLC0415
    from recsys.models.user_encoder import ENCODER_KIND, ServedUserTower  # noqa: PLC0415

    kinds = {ENCODER_KIND: ServedUserTower.from_payload, CLOSED_FORM_KIND: HistoryTableTower.from_payload}
    if payload.get("kind") not in kinds:
        raise ValueError(f"ensemble member kind {payload.get('kind')!r} is not one of {sorted(kinds)}")
    return kinds[payload["kind"]](payload)


def load_ensemble_encoder(payload: dict[str, Any], run: RunArtifact | None = None):
    """A `TowerUserEncoder` over `MemberConcat` of the members' served modules (all over the same catalogue)."""
    from recsys.models.user_encoder import TowerUserEncoder  # noqa: PLC0415

    members = [member_module(member) for member in payload["members"]]
    if len({m.n_items for m in members}) != 1:
        raise ValueError(f"ensemble members read different catalogues: {[m.n_items for m in members]} items")
    return TowerUserEncoder(MemberConcat(members, payload["weights"]), ENSEMBLE_KIND)


USER_ENCODER_LOADERS[ENSEMBLE_KIND] = load_ensemble_encoder
