"""The sampled training step (issue 14): it computes the full step's vectors from the items a batch
needs only, its TorchRec lookups touch those ids only, its cost does not grow with the catalogue,
and `auto` keeps the full step for small catalogues (TikTok, ML-100K)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.training_step_bench import synthetic_task
from recsys.models import LossConfig, ModelConfig
from recsys.models.graph import InteractionGraph, sample_neighbours
from recsys.models.task import AUTO_FULL_MAX_ITEMS, resolve_step
from tests.support.train_steps import step_losses
from training.trainer import SplitOptimizer, build_optimizer


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors; the machine is shared
    yield
    torch.set_num_threads(threads)


def model_config(**kw) -> ModelConfig:
    base = dict(dim=16, propagation_layers=2, item_knn=3, id_dropout=0.0, history_embedding=True,
                user_pooling="attention", recency_half_life=3.0, popularity_prior=True)
    return ModelConfig(**{**base, **kw})


LIGHTGCN_PP = dict(layer0_weight=0.2, graph_self_exponent=0.6, graph_neighbour_exponent=-0.1, graph_unit_layers=True)  # LightGCN++'s


@pytest.mark.parametrize("layers,knn,fanout,item_fanout,graph", [
    (0, 0, 2, 0, {}), (1, 0, 2, 0, {}), (2, 3, 2, 0, {}), (3, 3, 10_000, 0, {}), (1, 0, 10_000, 10_000, {}),
    (2, 3, 2, 2, {}), (2, 3, 2, 2, LIGHTGCN_PP), (3, 0, 10_000, 0, dict(layer0_weight=0.0))])
def test_sampled_step_vectors_equal_the_full_forward_at_the_cache_refresh(layers, knn, fanout, item_fanout, graph):
    """Cached propagation + sampled (fresh - cached) corrections: exact while the weights are the cached ones
    (LightGCN's layer mean and symmetric normalisation, and LightGCN++'s layer-0 weight and degree exponents)."""
    task, users, items = synthetic_task(300, 120, model_config(propagation_layers=layers, item_knn=knn, **graph),
                                        LossConfig(step="sampled", fanout=fanout, item_fanout=item_fanout), seed=1)
    task.eval()  # no ID dropout: both paths see the same item vectors
    task.begin_epoch()  # the cache holds the current weights' layers
    x = task.inputs
    with torch.no_grad():
        full = task.model(x.catalog, x.histories, x.graphs)
        rows = torch.randperm(len(users), generator=torch.Generator().manual_seed(0))[:64]
        sample, _, _ = task.step_sample(users[rows], items[rows], torch.Generator().manual_seed(1))
        step = task.model.step_forward(x.catalog, x.graphs, sample, task.cache)
    assert len(sample.encode) < x.catalog.n_items  # it did not encode everything
    torch.testing.assert_close(step.users, full.users[sample.users], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(step.items, full.items[sample.candidates], atol=1e-5, rtol=1e-4)


def test_neighbour_sampling_is_unbiased_and_bounded_by_the_fanout():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    pairs = rng.random((n_users, n_items)) < 0.5
    u, i = np.nonzero(pairs)
    graph = InteractionGraph.from_pairs(u, i, n_users, n_items)
    rows = torch.arange(n_users)
    x = torch.randn(n_items, 4)
    exact = torch.as_tensor(graph.user_item.matrix @ x.numpy())
    gen = torch.Generator().manual_seed(0)
    draws = [sample_neighbours(graph.user_item.matrix, rows, 5, gen) for _ in range(3000)]
    assert max(int(torch.bincount(d.segment).max()) for d in draws) <= 5
    mean = torch.stack([d.aggregate(x[d.nodes], n_users) for d in draws]).mean(0)
    torch.testing.assert_close(mean, exact, atol=0.05, rtol=0.05)
    complete = sample_neighbours(graph.user_item.matrix, rows, n_items, gen)
    torch.testing.assert_close(complete.aggregate(x[complete.nodes], n_users), exact, atol=1e-5, rtol=1e-5)


def test_sampled_step_looks_up_and_updates_only_the_rows_it_needs():
    task, users, items = synthetic_task(20_000, 300, model_config(item_knn=0, id_dropout=0.1),
                                        LossConfig(step="sampled", fanout=8, uniform_negatives=64), seed=2)
    optimizer = build_optimizer(task, lr=0.01, weight_decay=1e-3)
    assert isinstance(optimizer, SplitOptimizer)
    table = task.model.item_tower.id_embedding.embedding_bags["item_id_table"].weight
    history_table = task.model.user_tower.history_embedding.embedding_bags["history_item_table"].weight
    before, history_before = table.detach().clone(), history_table.detach().clone()
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, len(users), (128,), generator=gen)
    sample, _, _ = task.step_sample(users[rows], items[rows], torch.Generator().manual_seed(3))
    loss, parts = task(users[rows], items[rows], torch.Generator().manual_seed(3))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    assert table.grad.is_sparse and history_table.grad.is_sparse
    touched = torch.unique(table.grad.coalesce().indices())
    assert set(touched.tolist()) <= set(sample.encode.tolist())
    assert len(sample.encode) < 0.25 * task.inputs.catalog.n_items
    optimizer.step()
    changed = torch.nonzero((table.detach() != before).any(1)).squeeze(1)
    assert set(changed.tolist()) <= set(sample.encode.tolist()) and len(changed) > 0
    history_changed = torch.nonzero((history_table.detach() != history_before).any(1)).squeeze(1)
    assert set(history_changed.tolist()) <= set(sample.histories.items.tolist()) and len(history_changed) > 0
    assert torch.isfinite(loss) and set(parts) == {"retrieval"}


def test_sampled_step_reads_the_same_number_of_items_whatever_the_catalogue_size():
    """Step cost is bounded by batch x (window + fan-out): the items read do not grow with N."""
    for n_items in (5_000, 200_000):
        task, users, items = synthetic_task(n_items, 400, model_config(item_knn=0),
                                            LossConfig(step="sampled", fanout=8, item_fanout=2), seed=3)
        rows = torch.randint(0, len(users), (256,), generator=torch.Generator().manual_seed(0))
        sample, _, _ = task.step_sample(users[rows], items[rows], torch.Generator().manual_seed(0))
        assert len(sample.item_neighbours.nodes) <= len(sample.candidates) * 2
        assert len(sample.pooled) <= len(sample.users) + len(sample.candidates) * 2
        assert len(sample.histories.items) <= len(sample.pooled) * 50
        bound = len(sample.pooled) * 50 + len(sample.users) * 8 + 256  # windows + user fan-out + candidates
        assert len(sample.encode) <= bound  # the same bound at 5k and 200k items
    assert bound < 200_000  # so at 200k items a step reads a fraction of the catalogue


@pytest.mark.parametrize("kind,content,item_fanout", [("softmax", 0.5, 0), ("bpr", 0.0, 0), ("softmax", 0.0, 2)])
def test_sampled_step_trains(kind, content, item_fanout):
    task, users, items = synthetic_task(2_000, 200, model_config(item_knn=0, id_dropout=0.1),
                                        LossConfig(step="sampled", kind=kind, fanout=8, content_weight=content,
                                                   item_fanout=item_fanout), seed=4)
    losses = step_losses(task, users, items, build_optimizer(task, lr=0.02, weight_decay=0.0), epochs=4, steps=10,
                         batch=256)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_auto_keeps_the_full_step_for_small_catalogues():
    assert resolve_step(LossConfig(), 6_710) == "full"  # TikTok
    assert resolve_step(LossConfig(), 1_682) == "full"  # ML-100K
    assert resolve_step(LossConfig(), AUTO_FULL_MAX_ITEMS + 1) == "sampled"
    assert resolve_step(LossConfig(kind="full_softmax"), 10_000_000) == "full"
    assert resolve_step(LossConfig(step="sampled"), 100) == "sampled"
    with pytest.raises(ValueError, match="full_softmax"):
        LossConfig(step="sampled", kind="full_softmax")
