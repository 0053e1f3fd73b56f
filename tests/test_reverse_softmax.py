"""The sampled softmax's reverse direction (`loss.reverse_weight`): each batch positive picks its own user among
the batch's users. Controlled cases on tiny tensors: off is the forward loss exactly, on adds the column-wise
softmax of the same logits, and pairs the forward softmax masks stay masked."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from recsys.models.losses import sampled_softmax_loss


def _loss(users, pos_items, batch_users, items, weight):
    log_pop = torch.full((items.shape[0],), -math.log(items.shape[0]))
    return sampled_softmax_loss(users, pos_items, batch_users, items, log_pop, torch.tensor(0.1),
                                logq_weight=1.0, reverse_weight=weight)


def test_off_is_the_forward_loss_and_on_adds_the_weighted_reverse_term():
    g = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    items = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    pos, owners = torch.tensor([0, 1, 2, 3, 4, 5]), torch.arange(6)
    forward = _loss(users, pos, owners, items, 0.0)
    logits = users @ items[pos].T / 0.1  # uniform popularity: the logQ term is one constant, it cancels
    assert torch.allclose(forward, F.cross_entropy(logits, torch.arange(6)), atol=1e-5)
    reverse = F.cross_entropy(logits.T, torch.arange(6))
    assert torch.allclose(_loss(users, pos, owners, items, 0.5), forward + 0.5 * reverse, atol=1e-5)


def test_a_users_other_positive_is_not_a_negative_in_either_direction():
    items = torch.eye(3)
    users = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    pos, owners = torch.tensor([0, 1, 2]), torch.tensor([7, 7, 9])  # user 7 has two positives in the batch
    loss = _loss(users, pos, owners, items, 1.0)
    # every pair of user 7's rows is masked both ways: each row and each column has one unmasked
    # competitor at most (user 9 / item 2), which scores cosine 0 against a cosine of .71
    assert loss < 2 * math.log(1 + math.exp(-0.71 / 0.1)) + 1e-3
