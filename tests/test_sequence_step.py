"""The sequence step (`loss.step = "sequence"`): next-item training on windows of users' sequences.

Checked: the windows cover every train transition exactly once; the vector each history entry is
trained with is what the *served* user encoder gives the history ending there (train = serve);
and on a synthetic task where only the order of the history tells the next item, the trained
self-attention tower ranks the true next item far above where an order-blind mean pool, trained
the same way, can.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.config import LossConfig, ModelConfig
from recsys.models.item_tower import ItemCatalog
from recsys.models.next_item import SequenceWindows
from recsys.models.task import TaskInputs, TwoTowerTrainTask
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_encoder import encoder_payload, load_user_encoder
from recsys.models.user_tower import UserHistories


def test_windows_cover_every_transition_once_and_end_at_the_newest_item() -> None:
    users = torch.tensor([0] * 7 + [1] + [2] * 2 + [4] * 3)
    items = torch.tensor([10, 11, 12, 13, 14, 15, 16, 20, 30, 31, 40, 41, 42])
    windows = SequenceWindows(users, items, positions=3)
    histories, targets, owners = windows.batch(torch.arange(windows.n_windows))
    pairs = sorted(zip(owners.tolist(), histories.items.tolist(), targets.tolist()))
    expected = sorted([(0, a, a + 1) for a in range(10, 16)] + [(2, 30, 31), (4, 40, 41), (4, 41, 42)])
    assert pairs == expected  # user 1 (one event) has no transition
    assert windows.n_targets == len(expected)
    assert int(histories.lengths.max()) == 3  # at most `positions` history entries per window
    newest = windows.starts[0] + windows.lengths[0]
    assert int(newest) == 7  # user 0's first window ends at their newest item
    with pytest.raises(ValueError, match="sorted by user"):
        SequenceWindows(torch.tensor([1, 0]), torch.tensor([1, 2]), 3)


def _id_model(seed: int, n_items: int, n_users: int, **config) -> tuple[TwoTower, ItemCatalog]:
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=16, item_knn=0, propagation_layers=0, history_embedding=False, id_dropout=0.0, **config)
    catalog = ItemCatalog.from_arrays({}, {}, np.full(n_items, 3))
    model = TwoTower(cfg, n_items, n_users, {})
    model.item_tower.fit_statistics(catalog)
    return model, catalog


@pytest.mark.parametrize("pooling", ["self_attention", "mean"])
def test_every_trained_prefix_is_the_served_vector_of_that_prefix(pooling: str) -> None:
    rng = np.random.default_rng(3)
    n_items, n_users = 30, 6
    model, catalog = _id_model(3, n_items, n_users, user_pooling=pooling, recency_half_life=2.0,
                               attention_positions=5)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=gen) * 0.3)
    model.eval()
    sequences = [rng.choice(n_items, size=int(rng.integers(2, 13)), replace=False).tolist() for _ in range(n_users)]
    users = torch.tensor([u for u, s in enumerate(sequences) for _ in s])
    items = torch.tensor([i for s in sequences for i in s])
    windows = SequenceWindows(users, items, positions=5)
    histories, targets, owners = windows.batch(torch.arange(windows.n_windows))
    with torch.no_grad():
        out = model(catalog, UserHistories.from_lists(sequences), GraphContext())
        trained = model.finalise_users(model.user_tower.prefix_states(histories, out.item_inputs)).numpy()
        encoder = load_user_encoder(encoder_payload(model.config, model, model.serving_tables(out, GraphContext())))
    ends = torch.cumsum(histories.lengths, 0)
    for row in range(len(trained)):
        window = int(histories.segment[row])
        prefix = histories.items[int(ends[window] - histories.lengths[window]):row + 1].tolist()
        # the served history is the user's events before the target: its newest `positions` entries
        sequence = sequences[int(owners[row])]
        assert sequence[sequence.index(int(targets[row])) - 1] == prefix[-1]
        np.testing.assert_allclose(trained[row], encoder.encode([prefix])[0], atol=1e-5)


def _successor_task(pooling: str, seed: int = 0) -> tuple[TwoTower, ItemCatalog, np.ndarray, np.random.Generator]:
    """Train on walks where the next item is a fixed function of the *last* item only."""
    rng = np.random.default_rng(seed)
    n_items, n_users, length = 24, 120, 8
    successor = rng.permutation(n_items)
    walks = []
    for _ in range(n_users):
        walk = [int(rng.integers(n_items))]
        while len(walk) < length:
            walk.append(int(successor[walk[-1]]))
        walks.append(walk)
    model, catalog = _id_model(seed, n_items, n_users, user_pooling=pooling, recency_half_life=0.0,
                               attention_blocks=1, attention_dropout=0.0, popularity_prior=False)
    users = torch.tensor([u for u, w in enumerate(walks) for _ in w])
    items = torch.tensor([i for w in walks for i in w])
    windows = SequenceWindows(users, items, positions=10)
    inputs = TaskInputs(catalog, UserHistories.from_lists(walks), GraphContext(), torch.full((n_items,), 3.0),
                        windows)
    task = TwoTowerTrainTask(model.train(), LossConfig(kind="full_softmax", step="sequence"), inputs)
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(150):
        rows = torch.randperm(windows.n_windows, generator=gen)[:32]
        loss, _ = task(rows, None, gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), catalog, successor, rng


def _hit_rate_at_1(model: TwoTower, catalog: ItemCatalog, successor: np.ndarray, rng: np.random.Generator) -> float:
    """Share of fresh walks (unseen users) whose true next item is the top-scored one."""
    n_items, hits, n = len(successor), 0, 200
    histories = []
    for _ in range(n):
        walk = [int(rng.integers(n_items))]
        for _ in range(int(rng.integers(2, 7))):
            walk.append(int(successor[walk[-1]]))
        histories.append(walk)
    with torch.no_grad():
        out = model(catalog, UserHistories.from_lists(histories), GraphContext())
        scores = out.users @ out.items.T
    for row, walk in enumerate(histories):
        hits += int(int(scores[row].argmax()) == int(successor[walk[-1]]))
    return hits / n


def test_the_sequence_step_learns_order_that_a_mean_pool_cannot_see() -> None:
    sequential = _hit_rate_at_1(*_successor_task("self_attention"))
    mean_pool = _hit_rate_at_1(*_successor_task("mean"))
    # the next item follows from the last item alone: the causal tower finds it, a uniform mean of a
    # walk's items cannot tell which one is last
    assert sequential >= 0.9, sequential
    assert mean_pool <= sequential - 0.3, (sequential, mean_pool)


def test_the_sequence_step_refuses_a_graph_it_cannot_encode_per_prefix() -> None:
    model, catalog = _id_model(0, 10, 3, user_pooling="self_attention", )
    model.config = model.config.model_copy(update={"propagation_layers": 1})
    windows = SequenceWindows(torch.tensor([0, 0]), torch.tensor([1, 2]), 5)
    inputs = TaskInputs(catalog, UserHistories.from_lists([[1, 2]]), GraphContext(), torch.ones(10), windows)
    with pytest.raises(ValueError, match="propagation_layers=0"):
        TwoTowerTrainTask(model, LossConfig(kind="full_softmax", step="sequence"), inputs)
    with pytest.raises(ValueError, match="kind=full_softmax or kind=softmax"):
        LossConfig(kind="bpr", step="sequence")


def test_the_sequence_step_also_trains_with_the_in_batch_softmax() -> None:
    model, catalog = _id_model(0, 30, 5, user_pooling="self_attention")
    sequences = [[1, 2, 3, 4], [5, 6, 7], [8, 9], [1, 3, 5, 7, 9], [2, 4]]
    users = torch.tensor([u for u, s in enumerate(sequences) for _ in s])
    windows = SequenceWindows(users, torch.tensor([i for s in sequences for i in s]), 10)
    inputs = TaskInputs(catalog, UserHistories.from_lists(sequences), GraphContext(), torch.full((30,), 3.0), windows)
    task = TwoTowerTrainTask(model.train(), LossConfig(kind="softmax", step="sequence", logq_correction=1.0), inputs)
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, _ = task(torch.arange(windows.n_windows), None)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_view_contrast_picks_each_rows_own_view_and_spares_same_target_rows() -> None:
    from recsys.models.losses import view_contrast_loss

    gen = torch.Generator().manual_seed(0)
    first = torch.randn(6, 8, generator=gen)
    noisy = first + 0.05 * torch.randn(6, 8, generator=gen)
    shuffled = first[torch.tensor([1, 2, 3, 4, 5, 0])]
    targets = torch.arange(6)
    matched = view_contrast_loss(first, noisy, targets, 0.1)
    assert matched < view_contrast_loss(first, shuffled, targets, 0.1) - 1.0  # own view is the positive
    # rows 0 and 1 share their next item: each is no negative of the other, so making them identical
    # costs nothing, where with distinct targets the pair is the hardest negative
    twins = first.clone()
    twins[1] = twins[0]
    spared = view_contrast_loss(twins, twins, torch.tensor([7, 7, 2, 3, 4, 5]), 0.1)
    counted = view_contrast_loss(twins, twins, torch.tensor([0, 1, 2, 3, 4, 5]), 0.1)
    # counted: rows 0 and 1 each find a second positive-looking row, ~log 2 each of the 6 rows' terms
    assert torch.isfinite(spared) and float(spared) < 0.05 and float(counted) > 0.2


def test_view_contrast_runs_a_second_dropout_pass_only_while_training() -> None:
    n_items, n_users = 20, 8
    rng = np.random.default_rng(1)
    sequences = [rng.choice(n_items, size=6, replace=False).tolist() for _ in range(n_users)]
    model, catalog = _id_model(1, n_items, n_users, user_pooling="self_attention", attention_blocks=1,
                               attention_dropout=0.3, attention_positions=5)
    users = torch.tensor([u for u, s in enumerate(sequences) for _ in s])
    items = torch.tensor([i for s in sequences for i in s])
    windows = SequenceWindows(users, items, positions=5)
    inputs = TaskInputs(catalog, UserHistories.from_lists(sequences), GraphContext(), torch.full((n_items,), 3.0),
                        windows)
    loss_config = LossConfig(kind="full_softmax", step="sequence", view_contrast_weight=0.5)
    task = TwoTowerTrainTask(model.train(), loss_config, inputs)
    rows = torch.arange(windows.n_windows)
    loss, parts = task(rows, None, torch.Generator().manual_seed(0))
    assert "view_contrast" in parts and float(parts["view_contrast"]) > 0
    assert torch.allclose(loss, parts["retrieval"] + 0.5 * parts["view_contrast"])
    loss.backward()  # the term trains the tower: the attention blocks get its gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.user_tower.sequence.parameters())
    task.eval()
    with torch.no_grad():
        _, parts = task(rows, None, torch.Generator().manual_seed(0))
    assert "view_contrast" not in parts
    off = TwoTowerTrainTask(model.train(), LossConfig(kind="full_softmax", step="sequence"), inputs)
    assert "view_contrast" not in off(rows, None, torch.Generator().manual_seed(0))[1]


def test_horizon_targets_reach_into_the_next_window_and_stop_at_the_users_newest_item() -> None:
    users = torch.tensor([0] * 7 + [1] * 2)
    items = torch.tensor([10, 11, 12, 13, 14, 15, 16, 20, 21])
    windows = SequenceWindows(users, items, positions=3)
    rows = torch.arange(windows.n_windows)
    histories, next_items, owners = windows.batch(rows)
    later = windows.horizon_targets(rows, 3)
    assert torch.equal(later[:, 0], next_items)  # column 0 is the next item
    by_entry = {(o, h): row for o, h, row in zip(owners.tolist(), histories.items.tolist(), later.tolist())}
    assert by_entry[(0, 10)] == [11, 12, 13]  # 12 and 13 lie in user 0's newer window: still train events
    assert by_entry[(0, 14)] == [15, 16, -1]  # nothing after the newest train item
    assert by_entry[(1, 20)] == [21, -1, -1]  # never another user's items


def test_horizon_loss_weighs_later_items_by_the_decay_and_equals_the_next_item_loss_at_horizon_one() -> None:
    from recsys.models.losses import full_softmax_loss, horizon_softmax_loss

    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(4, 8, generator=gen), torch.randn(12, 8, generator=gen)
    temperature = torch.tensor(0.5)
    targets = torch.tensor([[1, 2, 3], [4, 5, -1], [6, -1, -1], [7, 8, 9]])
    assert torch.allclose(horizon_softmax_loss(users, targets[:, :1], items, temperature, 0.5),
                          full_softmax_loss(users, targets[:, 0], items, temperature))
    log_probs = torch.log_softmax(users @ items.T / temperature, dim=1)
    expected = torch.stack([
        -(log_probs[0, 1] + 0.5 * log_probs[0, 2] + 0.25 * log_probs[0, 3]) / 1.75,
        -(log_probs[1, 4] + 0.5 * log_probs[1, 5]) / 1.5,
        -log_probs[2, 6],
        -(log_probs[3, 7] + 0.5 * log_probs[3, 8] + 0.25 * log_probs[3, 9]) / 1.75]).mean()
    assert torch.allclose(horizon_softmax_loss(users, targets, items, temperature, 0.5), expected)


def test_target_horizon_needs_the_sequence_step_with_the_full_softmax() -> None:
    LossConfig(kind="full_softmax", step="sequence", target_horizon=4)
    with pytest.raises(ValueError, match="target_horizon"):
        LossConfig(kind="softmax", step="sequence", target_horizon=4)
    with pytest.raises(ValueError, match="target_horizon"):
        LossConfig(kind="full_softmax", step="full", target_horizon=4)
