"""The sequential user tower (self_attention pooling) and the next-item objective.

The property that makes the option a two-tower: every history prefix's training vector is the
vector the *served* tower computes for that prefix alone, so the next-item objective trains the
function serving runs. Checked against `ServedUserTower` (the module serving loads) on a random
model with randomised weights, plus the pair -> predecessor lookup and a short training run.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models.config import LossConfig, ModelConfig
from recsys.models.graph import InteractionGraph
from recsys.models.item_tower import ItemCatalog
from recsys.models.next_item import next_item_users, predecessor_entries
from recsys.models.task import TaskInputs, TwoTowerTrainTask
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_encoder import encoder_payload, load_user_encoder
from recsys.models.user_tower import UserHistories

N_ITEMS, N_USERS, DIM = 40, 10, 16


def _model(seed: int, **config) -> tuple[TwoTower, ItemCatalog, list[list[int]], GraphContext, ModelConfig]:
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=DIM, item_knn=0, **{"propagation_layers": 1, "history_embedding": False, **config})
    rng = np.random.default_rng(seed)
    features = {"image": rng.normal(size=(N_ITEMS, 8)).astype(np.float32)}
    catalog = ItemCatalog.from_arrays(features, {"image": np.ones(N_ITEMS, bool)}, rng.integers(0, 5, size=N_ITEMS))
    model = TwoTower(cfg, N_ITEMS, N_USERS, {"image": 8}).eval()
    model.item_tower.fit_statistics(catalog)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=gen) * 0.3)
    histories = [rng.choice(N_ITEMS, size=int(rng.integers(1, 15)), replace=False).tolist() for _ in range(N_USERS)]
    users = np.repeat(np.arange(N_USERS), [len(h) for h in histories])
    graph = InteractionGraph.from_pairs(users, np.concatenate(histories), N_USERS, N_ITEMS, cfg.graph_self_exponent,
                                        cfg.graph_neighbour_exponent)
    return model, catalog, histories, GraphContext(graph, None), cfg


@pytest.mark.parametrize("config", [dict(user_pooling="self_attention", recency_half_life=3.0),
                                    dict(user_pooling="self_attention", attention_blocks=1, propagation_layers=0),
                                    dict(user_pooling="mean", recency_half_life=3.0),
                                    dict(user_pooling="self_attention", recency_half_life=3.0, attention_heads=2,
                                         attention_inner=4 * DIM, attention_activation="gelu",
                                         attention_weight_dropout=0.5),
                                    dict(user_pooling="self_attention", recency_half_life=3.0,
                                         attention_item_embedding=True),
                                    dict(user_pooling="self_attention", recency_half_life=3.0, propagation_layers=2,
                                         layer0_weight=0.2, graph_self_exponent=0.6, graph_neighbour_exponent=-0.1,
                                         graph_unit_layers=True)],
                         ids=["self_attention", "self_attention-1-block-no-graph", "recency-mean",
                              "self_attention-2-heads-inner-4x-gelu", "self_attention-item-embedding",
                              "self_attention-lightgcnpp-propagation"])
def test_every_prefix_trains_the_vector_serving_gives_that_prefix(config: dict) -> None:
    model, catalog, histories, graphs, cfg = _model(4, **config)
    batch = UserHistories.from_lists(histories)
    with torch.no_grad():
        out = model(catalog, batch, graphs)
        encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
        pairs = [(u, h[t]) for u, h in enumerate(histories) for t in range(len(h))]
        users = torch.tensor([u for u, _ in pairs])
        items = torch.tensor([i for _, i in pairs])
        trained = next_item_users(model, out, batch, graphs, users, items).numpy()
    for row, (user, item) in enumerate(pairs):
        t = histories[user].index(item)
        prefix = histories[user][:t] if t else histories[user]  # the oldest item keeps the whole window
        np.testing.assert_allclose(trained[row], encoder.encode([prefix])[0], atol=1e-5)
    np.testing.assert_allclose(encoder.encode(histories), out.users.numpy(), atol=1e-5)


def test_predecessor_is_the_entry_before_the_item_or_none() -> None:
    batch = UserHistories.from_lists([[5, 3, 9], [3], [7, 5]])
    users, items = torch.tensor([0, 0, 0, 1, 2, 2, 0]), torch.tensor([5, 3, 9, 3, 7, 5, 7])
    assert predecessor_entries(batch, users, items).tolist() == [-1, 0, 1, -1, -1, 4, -1]


def test_self_attention_starts_as_the_recency_mean_and_trains() -> None:
    model, catalog, histories, graphs, cfg = _model(2, user_pooling="self_attention", recency_half_life=3.0)
    for p in model.user_tower.sequence.readout.parameters():
        torch.nn.init.zeros_(p)
    plain = TwoTower(cfg.model_copy(update={"user_pooling": "mean"}), N_ITEMS, N_USERS, {"image": 8}).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".sequence." not in k})
    batch = UserHistories.from_lists(histories)
    with torch.no_grad():
        torch.testing.assert_close(model(catalog, batch, graphs).users, plain(catalog, batch, graphs).users)
    inputs = TaskInputs(catalog, batch, graphs, torch.as_tensor(catalog.popularity))
    task = TwoTowerTrainTask(model.train(), LossConfig(kind="full_softmax", next_item=True), inputs)
    users = torch.tensor([u for u, h in enumerate(histories) for _ in h])
    items = torch.tensor([i for h in histories for i in h])
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = task(users, items)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert model.user_tower.sequence.readout.weight.abs().sum() > 0


def test_next_item_refuses_a_pooling_without_a_prefix_form() -> None:
    model, catalog, histories, graphs, _ = _model(1, user_pooling="attention")
    with pytest.raises(ValueError, match="next-item objective"):
        model.user_tower.prefix_states(UserHistories.from_lists(histories), torch.zeros(N_ITEMS, DIM))


def test_a_training_step_reuses_the_forward_pass_states_exactly() -> None:
    model, catalog, histories, graphs, _ = _model(6, user_pooling="self_attention", recency_half_life=3.0)
    batch = UserHistories.from_lists(histories)
    model.eval()  # no dropout: the reused and the recomputed states must agree
    out = model(catalog, batch, graphs)
    reused = model.user_tower.prefix_states(batch, out.item_inputs)
    model.user_tower._states = None
    fresh = model.user_tower.prefix_states(batch, out.item_inputs)
    torch.testing.assert_close(reused, fresh)
    assert reused.requires_grad


def test_the_attention_options_at_their_defaults_are_the_original_block() -> None:
    """`attention_heads` 1, `attention_inner` 0 (= dim), no separate weight dropout, relu: the block the
    runs before these options trained, parameter for parameter, so their weights load unchanged."""
    model, *_ = _model(4, user_pooling="self_attention", recency_half_life=3.0)
    shapes = {name: tuple(p.shape) for name, p in model.user_tower.sequence.named_parameters()}
    assert shapes["blocks.0.distance_bias"] == (50,)
    assert shapes["blocks.0.feed.0.weight"] == (DIM, DIM) and shapes["blocks.1.feed.3.weight"] == (DIM, DIM)
    wide, *_ = _model(4, user_pooling="self_attention", attention_heads=4, attention_inner=3 * DIM)
    wide_shapes = {name: tuple(p.shape) for name, p in wide.user_tower.sequence.named_parameters()}
    assert wide_shapes["blocks.0.distance_bias"] == (4, 50) and wide_shapes["blocks.0.feed.0.weight"] == (3 * DIM, DIM)
    assert set(wide_shapes) == set(shapes)
    with pytest.raises(ValueError, match="does not divide"):
        _model(4, user_pooling="self_attention", attention_heads=3)
    assert model.user_tower.sequence_items is None and "sequence_items" not in dict(model.named_parameters())


def test_the_blocks_own_item_embedding_starts_at_zero_so_the_tower_starts_as_without_it() -> None:
    """`attention_item_embedding`: one (n_items, dim) table added to what the blocks read, zero when made,
    so a fresh tower with it gives the vectors the same weights give without it; it trains."""
    torch.manual_seed(3)
    cfg = ModelConfig(dim=DIM, item_knn=0, propagation_layers=0, history_embedding=False,
                      user_pooling="self_attention", recency_half_life=3.0)
    plain = TwoTower(cfg, N_ITEMS, N_USERS, {"image": 8}).eval()
    own = TwoTower(cfg.model_copy(update={"attention_item_embedding": True}), N_ITEMS, N_USERS, {"image": 8}).eval()
    assert tuple(own.user_tower.sequence_items.shape) == (N_ITEMS, DIM)
    assert not own.user_tower.sequence_items.detach().abs().sum()
    own.load_state_dict({**plain.state_dict(), "user_tower.sequence_items": own.user_tower.sequence_items.detach()})
    with torch.no_grad():
        for p in own.user_tower.sequence.readout.parameters():
            p.add_(0.3)  # a non-zero readout, so the blocks' input shows in the user vector
        plain.user_tower.sequence.readout.load_state_dict(own.user_tower.sequence.readout.state_dict())
    rng = np.random.default_rng(3)
    features = {"image": rng.normal(size=(N_ITEMS, 8)).astype(np.float32)}
    catalog = ItemCatalog.from_arrays(features, {"image": np.ones(N_ITEMS, bool)}, rng.integers(0, 5, size=N_ITEMS))
    for model in (plain, own):
        model.item_tower.fit_statistics(catalog)
    histories = [rng.choice(N_ITEMS, size=int(rng.integers(1, 15)), replace=False).tolist() for _ in range(N_USERS)]
    batch, graphs = UserHistories.from_lists(histories), GraphContext(None, None)
    with torch.no_grad():
        torch.testing.assert_close(own(catalog, batch, graphs).users, plain(catalog, batch, graphs).users)
        own.user_tower.sequence_items.add_(torch.randn(N_ITEMS, DIM))
        assert not torch.allclose(own(catalog, batch, graphs).users, plain(catalog, batch, graphs).users)
