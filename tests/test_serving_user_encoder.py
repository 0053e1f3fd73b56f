"""The serving user tower's numpy path gives the training-time (torch) vectors for every pooling.

A controlled case on purpose: random weights for each tower variant the config allows, so a
pooling or coordinate the numpy code forgot shows up as a mismatch, not as a quietly worse feed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.config import ModelConfig
from recsys.models.ensemble import EnsembleUserEncoder
from recsys.models.popularity_prior import PopularityCoordinate
from recsys.models.user_encoder import GraphUserEncoder
from recsys.models.two_tower import ServingTables
from recsys.models.user_tower import UserTower

N_ITEMS, DIM = 50, 16
HISTORIES = [[3], [1, 2, 3, 4], [7, 7, 9, 7, 2], [], [49, 0, 12, 33, 12, 8, 5, 41, 17, 26, 11], [60, -1, 4]]


def _randomised(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.state_dict()


def _encoder(seed: int, popularity: bool, **config) -> GraphUserEncoder:
    config = ModelConfig(dim=DIM, **config)
    rng = np.random.default_rng(seed)
    tables = ServingTables(rng.normal(size=(N_ITEMS, DIM)).astype(np.float32),
                           rng.normal(size=(N_ITEMS, DIM)).astype(np.float32) * 0.3, 1 / 3)
    tower_state = _randomised(UserTower(config, N_ITEMS), seed)
    popularity_state = _randomised(PopularityCoordinate(DIM), seed + 1) if popularity else None
    return GraphUserEncoder(config, tower_state, tables, popularity_state)


VARIANTS = [
    dict(user_pooling="mean", history_embedding=False),
    dict(user_pooling="mean", history_embedding=False, recency_half_life=3.0),
    dict(user_pooling="mean", history_embedding=True),
    dict(user_pooling="attention", history_embedding=False),
    dict(user_pooling="attention", history_embedding=True, recency_half_life=5.0),
]


@pytest.mark.parametrize("popularity", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_numpy_path_equals_torch_path(variant: dict, popularity: bool) -> None:
    encoder = _encoder(7, popularity, **variant)
    fast = encoder.encode(HISTORIES)
    reference = encoder.encode_torch([encoder._clean(h) for h in HISTORIES])
    assert fast.shape == reference.shape == (len(HISTORIES), DIM + int(popularity))
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, atol=2e-6)
    empty = fast[3]
    if popularity:  # no history: pure popularity coordinate
        assert np.allclose(empty[:-1], 0) and abs(abs(empty[-1]) - 1) < 1e-6
    else:
        assert not np.any(empty)


def test_bulk_batches_use_the_torch_path_and_agree() -> None:
    encoder = _encoder(3, True, user_pooling="attention", history_embedding=True, recency_half_life=4.0)
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, N_ITEMS, size=rng.integers(1, 20)).tolist() for _ in range(GraphUserEncoder.NUMPY_MAX_USERS + 5)]
    bulk = encoder.encode(histories)  # over the threshold: torch
    one_by_one = np.concatenate([encoder.encode([h]) for h in histories])  # numpy
    np.testing.assert_allclose(bulk, one_by_one, atol=2e-6)


def test_ensemble_of_numpy_members_matches_torch_members() -> None:
    members = [_encoder(s, True, user_pooling="mean", history_embedding=False) for s in (0, 1, 2)]
    weights = [1.0, 0.8, 1.2]
    encoder = EnsembleUserEncoder(members, weights)
    assert encoder.fused is not None  # mean-pooled graph members share one gather
    ensemble = encoder.encode(HISTORIES)
    parts = [m.encode_torch([m._clean(h) for h in HISTORIES]) for m in members]
    expected = np.concatenate([w * p for p, w in zip(parts, weights)], axis=1)
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(ensemble, expected, atol=2e-6)


def test_ensemble_with_attention_members_encodes_member_by_member() -> None:
    members = [_encoder(s, True, user_pooling="attention", history_embedding=False) for s in (0, 1)]
    encoder = EnsembleUserEncoder(members, [1.0, 1.0])
    assert encoder.fused is None
    parts = [m.encode_torch([m._clean(h) for h in HISTORIES]) for m in members]
    expected = np.concatenate(parts, axis=1)
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(encoder.encode(HISTORIES), expected, atol=2e-6)
