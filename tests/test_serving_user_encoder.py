"""Serving encodes a history with the very module training ran, for every pooling the config allows.

A controlled case on purpose: a randomly initialised `TwoTower` on a small random graph, with its
weights randomised, so a pooling option, the propagation fold or the popularity coordinate that
serving got wrong shows up as a mismatch against the training forward pass itself.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from recsys.models.config import ModelConfig
from recsys.models.ensemble import ENSEMBLE_KIND, concat_members, ensemble_payload, load_ensemble_encoder
from recsys.models.graph import InteractionGraph
from recsys.models.item_tower import ItemCatalog
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_encoder import (TRACED_BATCHES, ServedUserTower, TowerUserEncoder, distinct_latest,
                                        encoder_payload, history_tensors, load_user_encoder)
from recsys.models.user_tower import UserHistories

N_ITEMS, N_USERS, DIM = 40, 12, 16
VARIANTS = [
    dict(user_pooling="mean", history_embedding=False),
    dict(user_pooling="mean", history_embedding=False, recency_half_life=3.0),
    dict(user_pooling="mean", history_embedding=True),
    dict(user_pooling="attention", history_embedding=False),
    dict(user_pooling="attention", history_embedding=True, recency_half_life=5.0),
    dict(user_pooling="self_attention", history_embedding=False, recency_half_life=3.0),
    dict(user_pooling="self_attention", history_embedding=True, attention_positions=8),
]


def _histories(seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ITEMS, size=int(rng.integers(1, 15)), replace=False).tolist() for _ in range(N_USERS)]


def _trained_like(seed: int, popularity: bool, layers: int, **config):
    """A TwoTower with random weights, its training forward output and its histories (= graph rows)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=DIM, propagation_layers=layers, item_knn=0, popularity_prior=popularity,
                      user_id_embedding=False, **config)
    rng = np.random.default_rng(seed)
    features = {"image": rng.normal(size=(N_ITEMS, 8)).astype(np.float32)}
    counts = rng.integers(0, 5, size=N_ITEMS)
    catalog = ItemCatalog.from_arrays(features, {"image": np.ones(N_ITEMS, bool)}, counts)
    model = TwoTower(cfg, N_ITEMS, N_USERS, {"image": 8}).eval()
    model.item_tower.fit_statistics(catalog)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    histories = _histories(seed)
    users = np.repeat(np.arange(N_USERS), [len(h) for h in histories])
    graph = InteractionGraph.from_pairs(users, np.concatenate(histories), N_USERS, N_ITEMS)
    graphs = GraphContext(graph if layers else None, None)
    with torch.no_grad():
        out = model(catalog, UserHistories.from_lists(histories), graphs)
    return cfg, model, out, graphs, histories


@pytest.mark.parametrize("layers", [0, 2])
@pytest.mark.parametrize("popularity", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_served_tower_reproduces_the_training_user_vectors(variant: dict, popularity: bool, layers: int) -> None:
    cfg, model, out, graphs, histories = _trained_like(7, popularity, layers, **variant)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    expected = out.users.numpy()
    np.testing.assert_allclose(encoder.encode(histories), expected, atol=1e-5)  # batched (eager)
    for user, history in enumerate(histories):  # request-sized (traced when traceable)
        np.testing.assert_allclose(encoder.encode([history])[0], expected[user], atol=1e-5)


def test_single_histories_run_a_trace_of_the_same_module() -> None:
    cfg, model, out, graphs, histories = _trained_like(3, True, 1, user_pooling="mean", recency_half_life=3.0, history_embedding=False)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    assert isinstance(encoder.module, ServedUserTower)
    assert encoder.single is not None, "the default tower must have the fast traced form"
    for history in histories:
        inputs = history_tensors([history])
        torch.testing.assert_close(encoder.single(*inputs), encoder.module(*inputs), atol=1e-6, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "self_attention"])
def test_small_batches_run_traces_and_equal_the_module_row_by_row(pooling: str) -> None:
    """The server batches concurrent feed misses (serving.batching): every batch size up to the
    largest trace, padded or not, gives each history the vector it gets from the module alone."""
    cfg, model, out, graphs, histories = _trained_like(4, True, 1, user_pooling=pooling, recency_half_life=3.0,
                                                       history_embedding=False)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    assert sorted(encoder.traced) == list(TRACED_BATCHES), "every batch size must have its trace"
    expected = out.users.numpy()
    for size in range(1, max(TRACED_BATCHES) + 1):  # 3, 5, 6, 7: padded to the next traced size
        rows = [(start + i) % N_USERS for start in range(0, N_USERS, size) for i in range(size)][:N_USERS]
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            np.testing.assert_allclose(encoder.encode([histories[u] for u in batch]), expected[batch], atol=1e-5)


def test_sequential_tower_single_histories_run_a_trace_too() -> None:
    cfg, model, out, graphs, histories = _trained_like(3, True, 1, user_pooling="self_attention", recency_half_life=3.0,
                                                       history_embedding=False)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    assert encoder.single is not None, "the self-attention tower must have the fast traced form"
    for history in histories:
        np.testing.assert_allclose(encoder.encode([history])[0], out.users.numpy()[histories.index(history)], atol=1e-5)


def test_payload_is_weights_only_and_round_trips() -> None:
    cfg, model, out, graphs, histories = _trained_like(5, True, 1, user_pooling="attention")
    payload = encoder_payload(cfg, model, model.serving_tables(out, graphs))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # refuses anything but tensors and plain values
    np.testing.assert_allclose(load_user_encoder(loaded).encode(histories), out.users.numpy(), atol=1e-5)


def test_histories_are_cleaned_the_same_way_for_training_and_serving() -> None:
    assert distinct_latest([7, 7, 9, 7, 2], 10) == [9, 7, 2]
    assert distinct_latest([60, -1, 4], 10) == [4]
    assert distinct_latest([], 10) == []
    cfg, model, out, graphs, _ = _trained_like(1, False, 1)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    np.testing.assert_allclose(encoder.encode([[7, 7, 9, 7, 2, 99]]), encoder.encode([[9, 7, 2]]), atol=1e-6)


def test_ensemble_serves_the_concatenation_of_its_members() -> None:
    members = [_trained_like(seed, True, 1) for seed in (11, 12)]
    payloads = [encoder_payload(cfg, model, model.serving_tables(out, graphs)) for cfg, model, out, graphs, _ in members]
    weights = [1.3, 0.7]
    encoder = load_ensemble_encoder(ensemble_payload(payloads, weights))
    assert isinstance(encoder, TowerUserEncoder) and encoder.kind == ENSEMBLE_KIND
    histories = members[0][4]  # the same users' histories for both (member 1's graph differs: not exact there)
    parts = [load_user_encoder(p).encode(histories) for p in payloads]
    expected = concat_members(parts, weights)
    np.testing.assert_allclose(encoder.encode(histories), expected, atol=1e-5)
    np.testing.assert_allclose(encoder.encode([histories[2]])[0], expected[2], atol=1e-5)
