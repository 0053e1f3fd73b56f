"""Edge dropout on the user-item graph (`model.edge_dropout`): a full training step propagates over the train
graph less a random share of its edges, renormalised; evaluation and serving keep the whole graph. Controlled
cases on small synthetic graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.training_step_bench import synthetic_task
from recsys.models import LossConfig, ModelConfig
from recsys.models.graph import InteractionGraph, thinned_graph
from tests.support.train_steps import step_losses


def star_graph() -> InteractionGraph:
    """User 0 took all 50 items; users 1..50 took one item each (user k took item k - 1)."""
    users = np.concatenate([np.zeros(50, np.int64), np.arange(1, 51)])
    items = np.concatenate([np.arange(50), np.arange(50)])
    return InteractionGraph.from_pairs(users, items, 51, 50)


def edges(graph: InteractionGraph) -> set[tuple[int, int]]:
    coo = graph.user_item.matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


@pytest.mark.parametrize("mode", ["uniform", "degree"])
def test_a_thinned_graph_keeps_its_share_of_the_edges_renormalised_over_them(mode):
    full = star_graph()
    thin = thinned_graph(full, 0.3, mode, torch.Generator().manual_seed(0))
    assert len(edges(thin)) == 70 and edges(thin) <= edges(full)
    m = thin.user_item.matrix.toarray()
    du, di = (m > 0).sum(1), (m > 0).sum(0)
    rows, cols = np.nonzero(m)
    assert np.allclose(m[rows, cols], 1 / np.sqrt(du[rows] * di[cols]))  # D^-1/2 R D^-1/2 of the kept edges
    assert np.allclose(thin.item_user.matrix.toarray(), m.T)


def test_the_degree_mode_drops_the_heavy_users_edges_first():
    """Odds 1/sqrt(deg u · deg i): user 0's 50 edges (degree 50, items of degree 2) are 7x lower odds."""
    full, gen = star_graph(), torch.Generator().manual_seed(1)
    kept_heavy = {"uniform": [], "degree": []}
    for mode in kept_heavy:
        for _ in range(20):
            kept_heavy[mode].append(sum(u == 0 for u, _ in edges(thinned_graph(full, 0.5, mode, gen))))
    assert 20 <= np.mean(kept_heavy["uniform"]) <= 30  # half of them, as half of all edges
    assert np.mean(kept_heavy["degree"]) < 13  # ~10: drawn without replacement, the light edges run out first


def full_task(**model):
    base = dict(dim=16, propagation_layers=2, item_knn=0, id_dropout=0.0, popularity_prior=True)
    return synthetic_task(600, 80, ModelConfig(**{**base, **model}), LossConfig(step="full"), seed=3)


def test_training_steps_propagate_over_other_subgraphs_and_evaluation_over_the_whole_graph():
    task, users, items = full_task(edge_dropout=0.4)
    whole = task.inputs.graphs.interactions
    task.train()
    a, b = (task.step_graphs(torch.Generator().manual_seed(s)).interactions for s in (0, 1))
    assert a is not whole and b is not whole and edges(a) != edges(b)
    assert len(edges(a)) == round(0.6 * len(edges(whole)))
    task.eval()
    assert task.step_graphs(torch.Generator().manual_seed(0)).interactions is whole
    off, _, _ = full_task()
    off.train()
    assert off.step_graphs(torch.Generator().manual_seed(0)).interactions is off.inputs.graphs.interactions


def test_a_step_with_edge_dropout_trains():
    task, users, items = full_task(edge_dropout=0.3, edge_dropout_mode="degree")
    losses = step_losses(task, users, items, torch.optim.Adam(task.parameters(), lr=0.02), epochs=1, steps=40,
                         batch=128)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_the_sampled_step_refuses_edge_dropout_with_a_message():
    with pytest.raises(ValueError, match="edge_dropout"):
        synthetic_task(600, 80, ModelConfig(dim=16, propagation_layers=2, edge_dropout=0.2),
                       LossConfig(step="sampled"), seed=3)


def test_edge_dropout_off_leaves_the_run_fingerprint_as_before():
    from training.config import TrainConfig
    before = "2abbd56553c3abd6"  # TrainConfig().fingerprint() before the option existed (commit 4e92a68)
    assert TrainConfig().fingerprint() == before
    assert TrainConfig(model=ModelConfig(edge_dropout=0.0, edge_dropout_mode="uniform")).fingerprint() == before
    assert TrainConfig(model=ModelConfig(edge_dropout=0.2)).fingerprint() != before
