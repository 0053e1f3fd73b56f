"""The sampled softmax's reverse direction (`loss.reverse_weight`): each batch positive picks its own user among
the batch's users. Controlled cases on tiny tensors: off is the forward loss exactly, on adds the column-wise
softmax of the same logits, and pairs the forward softmax masks stay masked."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from recsys.models.losses import grouped_sampled_softmax_loss, sampled_softmax_loss


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


def test_groups_are_separate_softmaxes_whose_rows_never_see_another_groups_positives():
    """`loss.softmax_group`: one propagation, several in-batch softmaxes of the usual size."""
    g = torch.Generator().manual_seed(1)
    users = F.normalize(torch.randn(8, 8, generator=g), dim=1)
    items = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    pos, owners = torch.arange(8), torch.arange(8)
    log_pop = torch.log(torch.linspace(1, 3, 12) / torch.linspace(1, 3, 12).sum())

    def grouped(vectors, group):
        return grouped_sampled_softmax_loss(users, pos, owners, vectors, log_pop, torch.tensor(0.1), group, 3.0)

    whole = sampled_softmax_loss(users, pos, owners, items, log_pop, torch.tensor(0.1), 3.0)
    assert torch.equal(grouped(items, 0), whole) and torch.equal(grouped(items, 8), whole)
    halves = [sampled_softmax_loss(users[r], pos[r], owners[r], items, log_pop, torch.tensor(0.1), 3.0)
              for r in (slice(0, 4), slice(4, 8))]
    assert torch.allclose(grouped(items, 4), (halves[0] + halves[1]) / 2)
    # an item of the second group made the perfect rival of the first group's rows: the grouped loss's first
    # half does not see it, only the second half's own softmax changes
    rival = items.clone()
    rival[5] = users[0]
    second = sampled_softmax_loss(users[4:], pos[4:], owners[4:], rival, log_pop, torch.tensor(0.1), 3.0)
    assert torch.allclose(grouped(rival, 4), (halves[0] + second) / 2)
    # groups of unequal size weigh by their rows
    thirds = [sampled_softmax_loss(users[r], pos[r], owners[r], items, log_pop, torch.tensor(0.1), 3.0)
              for r in (slice(0, 3), slice(3, 6), slice(6, 8))]
    assert torch.allclose(grouped(items, 3), (3 * thirds[0] + 3 * thirds[1] + 2 * thirds[2]) / 8)
