"""The recency-mean pooling as a sparse product (`pooling_matrix`) is the gather-and-sum it replaces, bit for bit.

Why it matters: training (the full step over a whole user base) takes the product and serving's small requests
take the gather, so both must give the same vectors and gradients, or the figures of a run would depend on how
large its batches were.
"""
from __future__ import annotations

import numpy as np
import torch

from recsys.models import user_tower
from recsys.models.config import ModelConfig
from recsys.models.user_tower import UserHistories, UserTower, pooling_is_a_product, segment_sum


def _histories(rng: np.random.Generator, n_users: int, n_items: int) -> UserHistories:
    lengths = rng.integers(0, 30, n_users)  # some empty histories too
    return UserHistories.from_flat(rng.integers(0, n_items, int(lengths.sum())), lengths)


def test_the_pooling_product_equals_the_gather_and_its_gradient_too(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    n_items, dim = 300, 24
    histories = _histories(rng, 200, n_items)
    tower = UserTower(ModelConfig(dim=dim, recency_half_life=3.0, user_pooling="mean", history_embedding=False), n_items, 200)
    items = torch.randn(n_items, dim, requires_grad=True)
    upstream = torch.randn(200, dim)

    def pooled(threshold: int) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(user_tower, "PRODUCT_MIN_VALUES", threshold)
        items.grad = None
        out = tower(histories, items)
        out.backward(upstream)
        return out.detach(), items.grad.clone()

    weights = tower.pooling_weights(histories, items)
    monkeypatch.setattr(user_tower, "PRODUCT_MIN_VALUES", 0)
    assert pooling_is_a_product(weights, items)
    product, product_grad = pooled(0)
    gathered, gathered_grad = pooled(1 << 62)  # never the product
    assert torch.equal(product, gathered) and torch.equal(product_grad, gathered_grad)
    expected = segment_sum(weights.unsqueeze(1) * items.detach()[histories.items], histories.segment, 200)
    assert torch.equal(product, expected)
    assert torch.equal(product[histories.lengths == 0], torch.zeros(int((histories.lengths == 0).sum()), dim))


def test_a_learned_pooling_is_never_taken_for_a_product(monkeypatch) -> None:
    """Attention pooling's weights carry a gradient: a fixed matrix would silently drop it."""
    monkeypatch.setattr(user_tower, "PRODUCT_MIN_VALUES", 0)
    rng = np.random.default_rng(1)
    histories = _histories(rng, 20, 50)
    tower = UserTower(ModelConfig(dim=8, user_pooling="attention"), 50, 20)
    items = torch.randn(50, 8)
    assert not pooling_is_a_product(tower.pooling_weights(histories, items), items)
