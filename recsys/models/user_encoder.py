"""Serving-side user encoder of a trained two-tower: a live history -> the user vector training produced.

Rebuilt from `user_encoder.pt` in the run directory with no dataset and no training code.
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

ENCODER_KIND = "two_tower_graph"


class GraphUserEncoder:
    """Live history (item indices, oldest first) -> user vector, exactly as training built train users.

    user = normalise(scale · UserTower(history) + |h|^-1/2 · Σ_{i∈h} propagated[i]); repeated
    items count once (keeping their latest position), as in the training graph. Unknown item
    indices are ignored; an empty history gives a zero vector (callers fall back to popularity).

    Request-sized batches (≤ `NUMPY_MAX_USERS` users) run on `NumpyUserTower`: the same arithmetic
    on the tower's weights as numpy arrays, because torch's per-op dispatch (~0.5 ms over a dozen
    tiny tensors) was the largest single cost of a feed cache miss. Bulk encodes (offline jobs) keep
    the batched torch path; `tests/test_serving_user_encoder.py` holds the two equal.
    """

    kind = ENCODER_KIND
    NUMPY_MAX_USERS = 32

    def __init__(self, config: ModelConfig, user_tower_state: dict[str, torch.Tensor], tables: ServingTables,
                 popularity_state: dict[str, torch.Tensor] | None = None):
        config = config.model_copy(update={"user_id_embedding": False})  # live users are their history
        self.n_items = tables.item_inputs.shape[0]
        self.tower = UserTower(config, self.n_items).eval()
        state = {k: v for k, v in user_tower_state.items() if not k.startswith("user_embedding.")}
        self.tower.load_state_dict(state)
        self.item_inputs = torch.as_tensor(tables.item_inputs)
        self.propagated = torch.as_tensor(tables.propagated)
        self.layer_scale = tables.layer_scale
        self.popularity = None
        if popularity_state is not None:
            self.popularity = PopularityCoordinate(config.dim).eval()
            self.popularity.load_state_dict(popularity_state)
        self.fast = NumpyUserTower(config, self.tower, tables, self.popularity)

    def _clean(self, history: list[int]) -> list[int]:
        seen: set[int] = set()
        out = []
        for item in reversed([int(i) for i in history]):
            if 0 <= item < self.n_items and item not in seen:
                seen.add(item)
                out.append(item)
        return out[::-1]

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray:
        cleaned = [self._clean(h) for h in histories]
        if len(cleaned) <= self.NUMPY_MAX_USERS:
            return self.fast.encode(cleaned)
        return self.encode_torch(cleaned)

    def encode_torch(self, cleaned: list[list[int]]) -> np.ndarray:
        """The batched torch path (the training-time arithmetic) over already-cleaned histories."""
        batch = UserHistories.from_lists(cleaned)
        with torch.no_grad():
            users = self.layer_scale * self.tower(batch, self.item_inputs)
            prop = torch.zeros_like(users).index_add(0, batch.segment, self.propagated[batch.items])
            users = users + prop / batch.lengths.clamp(min=1).sqrt().unsqueeze(1).float()
            users = torch.nn.functional.normalize(users, dim=1)
            if self.popularity is not None:
                users = self.popularity.users(users)
        return l2_normalise(users.numpy())


def _normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """torch.nn.functional.normalize of one vector (x / max(|x|, eps))."""
    return x / max(float(np.linalg.norm(x)), eps)


def propagation_term(propagated: np.ndarray, items: np.ndarray) -> np.ndarray:
    """|h|^-1/2 · Σ_{i∈h} propagated[i] (columns may be several members' tables side by side)."""
    return propagated[items].sum(axis=0) / np.float32(np.sqrt(len(items)))


def _stack_users(encode_one, cleaned: list[list[int]], out_dim: int) -> np.ndarray:
    """(n, out_dim) L2-normalised rows of `encode_one` over cleaned histories (n may be 0)."""
    if not cleaned:
        return np.zeros((0, out_dim), np.float32)
    return l2_normalise(np.stack([encode_one(h) for h in cleaned]))


class NumpyUserTower:
    """One cleaned history -> its user vector with numpy only (see `GraphUserEncoder`).

    Mirrors `UserTower.forward` + the propagation term + `PopularityCoordinate.users` for every
    pooling the config allows (recency-decayed mean, attention + learned recency slope, the
    optional history-item EmbeddingBag); weights are copied once at load.
    """

    def __init__(self, config: ModelConfig, tower: UserTower, tables: ServingTables,
                 popularity: PopularityCoordinate | None):
        f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
        self.item_inputs = np.ascontiguousarray(tables.item_inputs, dtype=np.float32)
        self.propagated = np.ascontiguousarray(tables.propagated, dtype=np.float32)
        self.layer_scale = np.float32(tables.layer_scale)
        half_life = config.recency_half_life
        self.decay = np.float32(np.log(2.0) / half_life) if half_life > 0 else None
        self.attention = None
        if config.user_pooling == "attention":
            slope = float(torch.nn.functional.softplus(tower.recency_logit.detach()))
            self.attention = (f32(tower.attn_key.weight).T.copy(), f32(tower.attn_key.bias), f32(tower.attn_query),
                              np.float32(slope))
        self.history_table = None
        if tower.history_embedding is not None:
            self.history_table = f32(next(iter(tower.history_embedding.parameters())))
        self.popularity = None
        if popularity is not None:
            self.popularity = (f32(popularity.user_head.weight)[0], np.float32(popularity.user_head.bias.item()))
        self.dim = self.item_inputs.shape[1]
        self.out_dim = self.dim + (1 if popularity is not None else 0)

    def _weights(self, items: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Pooling weights (sum 1); `rows` (the items' inputs) are only read by attention pooling."""
        age = np.arange(len(items) - 1, -1, -1, dtype=np.float32)
        logits = -age * self.decay if self.decay is not None else np.zeros(len(items), np.float32)
        if self.attention is not None:
            key_w, key_b, query, slope = self.attention
            logits = np.tanh(rows @ key_w + key_b) @ query + logits - slope * age
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def encode(self, cleaned: list[list[int]]) -> np.ndarray:
        return _stack_users(self.encode_one, cleaned, self.out_dim)

    def encode_one(self, history: list[int]) -> np.ndarray:
        """Unit user vector (dim, or dim + 1 with the popularity coordinate); zeros stay zeros before it."""
        user = np.zeros(self.dim, np.float32)
        if history:
            items = np.asarray(history, dtype=np.int64)
            rows = self.item_inputs[items]
            weights = self._weights(items, rows)
            pooled = weights @ rows
            if self.history_table is not None:
                pooled = pooled + weights @ self.history_table[items]
            user = self.combine(pooled, propagation_term(self.propagated, items))
        return self.finish(user)

    def combine(self, pooled: np.ndarray, propagation: np.ndarray) -> np.ndarray:
        """normalise(scale · pooled history + propagation term): the graph user vector before the prior."""
        return _normalise(self.layer_scale * pooled + propagation)

    def finish(self, user: np.ndarray) -> np.ndarray:
        """The popularity coordinate (when the run has one) appended to a unit (or zero) user vector."""
        if self.popularity is None:
            return user.astype(np.float32, copy=False)
        head_w, head_b = self.popularity
        coordinate = np.tanh(user @ head_w + head_b)
        rest = np.sqrt(max(1.0 - float(coordinate) ** 2, 1e-6))
        return _normalise(np.append(user * rest, coordinate)).astype(np.float32)


class FusedMemberTowers:
    """Several members' `NumpyUserTower`s as one: one gather over concatenated item tables.

    Why: an ensemble run's members differ only in weights, and with mean pooling their pooling
    weights are the same, so gathering the history rows once from [inputs_1 | ... | inputs_K]
    replaces K gathers and K softmaxes (the three-member TikTok default: 0.22 -> 0.1 ms per
    user). Members with attention pooling or a history table are not fusable (`fuse` -> None).
    """

    def __init__(self, towers: list[NumpyUserTower], weights: np.ndarray):
        first = towers[0]
        self.decay = first.decay
        self.inputs = np.ascontiguousarray(np.concatenate([t.item_inputs for t in towers], axis=1))
        self.propagated = np.ascontiguousarray(np.concatenate([t.propagated for t in towers], axis=1))
        bounds = np.cumsum([0] + [t.dim for t in towers])
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.towers, self.weights = towers, np.asarray(weights, dtype=np.float32)
        self.out_dim = sum(t.out_dim for t in towers)

    @classmethod
    def fuse(cls, towers: list[NumpyUserTower], weights: np.ndarray) -> "FusedMemberTowers | None":
        if len(towers) < 2 or any(t.attention is not None or t.history_table is not None for t in towers):
            return None
        if len({t.decay for t in towers}) != 1 or len({t.item_inputs.shape[0] for t in towers}) != 1:
            return None
        return cls(towers, weights)

    def encode(self, cleaned: list[list[int]]) -> np.ndarray:
        return _stack_users(self.encode_one, cleaned, self.out_dim)

    def encode_one(self, history: list[int]) -> np.ndarray:
        """[w_1 u_1 | ... | w_K u_K] for one cleaned history (not yet normalised as a whole)."""
        first = self.towers[0]
        if history:
            items = np.asarray(history, dtype=np.int64)
            pooled = first._weights(items, None) @ self.inputs[items]
            spread = propagation_term(self.propagated, items)
        parts = []
        for tower, part, weight in zip(self.towers, self.slices, self.weights):
            user = tower.combine(pooled[part], spread[part]) if history else np.zeros(tower.dim, np.float32)
            parts.append(weight * tower.finish(user))
        return np.concatenate(parts)


def _state(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if module is None else {k: v.detach().clone() for k, v in module.state_dict().items()}


def encoder_payload(config: ModelConfig, model: TwoTower, tables: ServingTables) -> dict[str, Any]:
    """What `user_encoder.pt` holds for this model kind (tensors only, loadable without the dataset)."""
    return {"kind": ENCODER_KIND, "config": config.model_dump(), "user_tower": _state(model.user_tower),
            "popularity": _state(model.popularity),
            "item_inputs": torch.as_tensor(tables.item_inputs), "propagated": torch.as_tensor(tables.propagated),
            "layer_scale": tables.layer_scale}


def load_user_encoder(payload: dict[str, Any], run: RunArtifact | None = None) -> GraphUserEncoder:
    tables = ServingTables(payload["item_inputs"].numpy(), payload["propagated"].numpy(), float(payload["layer_scale"]))
    return GraphUserEncoder(ModelConfig(**payload["config"]), payload["user_tower"], tables, payload.get("popularity"))


USER_ENCODER_LOADERS[ENCODER_KIND] = load_user_encoder


