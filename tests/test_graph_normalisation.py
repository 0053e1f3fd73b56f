"""LightGCN++'s propagation knobs (`model.layer0_weight`, `model.graph_self_exponent`,
`model.graph_neighbour_exponent`): the matrices are the formula, the defaults are LightGCN bit for bit,
and a graph normalised otherwise than the config says is refused instead of served inconsistently."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.training_step_bench import synthetic_task
from recsys.models import LossConfig, ModelConfig
from recsys.models.graph import InteractionGraph, layer_weights, propagate, propagation_layers, thinned_graph
from recsys.models.two_tower import GraphContext
from training.config import TrainConfig


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(20), rng.integers(1, 8, size=20))
    items = rng.integers(0, 15, size=len(users))
    return users, items


def test_the_matrices_are_each_nodes_degree_to_alpha_times_its_neighbours_to_beta():
    users, items = _pairs()
    graph = InteractionGraph.from_pairs(users, items, 20, 15, self_exponent=0.6, neighbour_exponent=-0.1)
    r = np.zeros((20, 15), np.float32)
    r[users, items] = 1.0
    du, di = np.maximum(r.sum(1), 1), np.maximum(r.sum(0), 1)
    np.testing.assert_allclose(graph.user_item.matrix.toarray(), du[:, None] ** -0.6 * r * di[None, :] ** 0.1,
                               rtol=1e-6)
    np.testing.assert_allclose(graph.item_user.matrix.toarray(), di[:, None] ** -0.6 * r.T * du[None, :] ** 0.1,
                               rtol=1e-6)
    thin = thinned_graph(graph, 0.3, "uniform", torch.Generator().manual_seed(0))  # edge dropout keeps the exponents
    assert (thin.self_exponent, thin.neighbour_exponent) == (0.6, -0.1)


def test_the_defaults_are_lightgcn_bit_for_bit():
    users, items = _pairs()
    graph = InteractionGraph.from_pairs(users, items, 20, 15)
    r = np.zeros((20, 15), np.float32)
    r[users, items] = 1.0
    du, di = np.maximum(r.sum(1), 1), np.maximum(r.sum(0), 1)
    expected = (np.diag(1 / np.sqrt(du)) @ r @ np.diag(1 / np.sqrt(di))).astype(np.float32)
    assert np.array_equal(graph.user_item.matrix.toarray(), expected)
    assert graph.renormalised(0.5, 0.5) is graph
    u0, i0 = torch.randn(20, 4), torch.randn(15, 4)
    users_mean, items_mean, _ = propagate(graph, u0, i0, 2)
    users_weighted, items_weighted, _ = propagate(graph, u0, i0, 2, layer0_weight=1 / 3)
    torch.testing.assert_close(users_weighted, users_mean)  # g = 1/(L+1) is the mean
    torch.testing.assert_close(items_weighted, items_mean)


def test_unit_inputs_scale_each_layer_before_it_is_propagated():
    users, items = _pairs()
    graph = InteractionGraph.from_pairs(users, items, 20, 15, 0.6, -0.1)
    u0, i0 = torch.randn(20, 4) * 5, torch.randn(15, 4) * 5
    user_layers, item_layers = propagation_layers(graph, u0, i0, 2, unit_inputs=True)
    unit = lambda x: x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)  # noqa: E731
    u1, i1 = graph.user_item @ unit(i0), graph.item_user @ unit(u0)
    torch.testing.assert_close(user_layers[1], u1)
    torch.testing.assert_close(user_layers[2], graph.user_item @ unit(i1))
    torch.testing.assert_close(item_layers[2], graph.item_user @ unit(u1))


def test_layer_weights():
    assert layer_weights(3, None) == (0.25, 0.25)
    assert layer_weights(2, 0.0) == (0.0, 0.5)
    assert layer_weights(4, 0.2) == pytest.approx((0.2, 0.2))
    assert layer_weights(0, 0.3) == (1.0, 0.0)


def test_a_graph_normalised_otherwise_than_the_config_is_refused():
    task, _, _ = synthetic_task(60, 30, ModelConfig(dim=8, propagation_layers=2, graph_self_exponent=0.6), LossConfig())
    x = task.inputs
    stale = GraphContext(InteractionGraph.from_pairs(*x.graphs.interactions.pairs(), 30, 60), None)
    with pytest.raises(ValueError, match="degree exponents"):
        task.model(x.catalog, x.histories, stale)
    task.model(x.catalog, x.histories, x.graphs)  # built with the config's exponents: fine


def test_lightgcn_defaults_leave_the_run_fingerprint_as_before():
    base = TrainConfig.model_validate({"data": {"dataset": "d"}})
    same = TrainConfig.model_validate({"data": {"dataset": "d"}, "model": {"graph_self_exponent": 0.5,
                                                                         "graph_neighbour_exponent": 0.5}})
    other = TrainConfig.model_validate({"data": {"dataset": "d"}, "model": {"layer0_weight": 0.0}})
    assert base.fingerprint() == same.fingerprint() != other.fingerprint()
