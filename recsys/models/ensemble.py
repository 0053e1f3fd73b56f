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

from recsys.artifact import USER_ENCODER_LOADERS, RunArtifact, UserEncoder, l2_normalise

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


class EnsembleUserEncoder:
    """Live history -> concatenation of every member encoder's user vector (see module docstring)."""

    kind = ENSEMBLE_KIND

    def __init__(self, members: list[UserEncoder], weights: np.ndarray | list[float]):
        assert len(members) == len(weights) and members, "one weight per member, at least one member"
        self.members, self.weights = members, np.asarray(weights, dtype=np.float64)
        from recsys.models.user_encoder import FusedMemberTowers, GraphUserEncoder

        graph = all(isinstance(m, GraphUserEncoder) for m in members)
        self.fused = FusedMemberTowers.fuse([m.fast for m in members], self.weights) if graph else None

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray:
        """Request-sized batches of fusable graph members take one fused numpy pass (same numbers)."""
        fused = self.fused
        if fused is not None and len(histories) <= self.members[0].NUMPY_MAX_USERS:
            return fused.encode([self.members[0]._clean(h) for h in histories])
        return concat_members([m.encode(histories, timestamps) for m in self.members], self.weights)


def ensemble_payload(member_payloads: list[dict[str, Any]], weights: np.ndarray | list[float]) -> dict[str, Any]:
    """What `user_encoder.pt` holds for an ensemble: each member's own payload and its weight."""
    return {"kind": ENSEMBLE_KIND, "members": member_payloads, "weights": [float(w) for w in weights]}


def load_ensemble_encoder(payload: dict[str, Any], run: RunArtifact | None = None) -> EnsembleUserEncoder:
    members = []
    for member in payload["members"]:
        loader = USER_ENCODER_LOADERS.get(member["kind"])
        if loader is None:
            raise ValueError(f"ensemble member has unknown user-encoder kind {member['kind']!r}")
        members.append(loader(member, run))
    return EnsembleUserEncoder(members, payload["weights"])


USER_ENCODER_LOADERS[ENSEMBLE_KIND] = load_ensemble_encoder
