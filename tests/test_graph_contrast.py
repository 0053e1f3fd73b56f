"""SimGCL's contrastive term on the graph propagation (`loss.graph_contrast_weight`): two perturbed
propagations per full training step, contrasted per batch user and item; the served vectors stay the clean
propagation. Controlled cases on small synthetic graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.training_step_bench import synthetic_task
from recsys.models import LossConfig, ModelConfig
from recsys.models.graph import perturbed
from tests.support.train_steps import step_losses


def test_a_perturbed_row_moves_by_its_share_of_its_length_and_keeps_its_signs():
    x = torch.randn(200, 32) * torch.linspace(0.1, 10, 200).unsqueeze(1)
    y = perturbed(x, 0.2, torch.Generator().manual_seed(0))
    moved = (y - x).norm(dim=1) / x.norm(dim=1)
    assert torch.allclose(moved, torch.full_like(moved, 0.2), atol=1e-5)  # relative: the same on long and short rows
    assert bool(((torch.sign(y) == torch.sign(x)) | (x == 0)).all())  # SimGCL's orthant: a rotation, never a flip


def full_task(**loss):
    model = ModelConfig(dim=16, propagation_layers=2, item_knn=0, id_dropout=0.0, popularity_prior=True)
    return synthetic_task(600, 80, model, LossConfig(step="full", **loss), seed=3)


def test_training_steps_add_the_term_and_evaluation_is_the_clean_propagation():
    task, users, items = full_task(graph_contrast_weight=0.5)
    off, _, _ = full_task()
    off.load_state_dict(task.state_dict())
    task.train()
    off.train()
    _, parts = task(users[:64], items[:64], torch.Generator().manual_seed(0))
    _, parts_off = off(users[:64], items[:64], torch.Generator().manual_seed(0))
    assert "graph_contrast" in parts and "graph_contrast" not in parts_off
    assert torch.isclose(parts["retrieval"], parts_off["retrieval"])  # the ranked vectors are not perturbed
    # two views of 64 rows: a chance-level InfoNCE is log 64 per side; views of the same row agree far better
    assert 0 < float(parts["graph_contrast"]) < 2 * np.log(64)
    task.eval()
    _, eval_parts = task(users[:64], items[:64], torch.Generator().manual_seed(0))
    assert "graph_contrast" not in eval_parts


def test_a_step_with_the_contrast_trains():
    task, users, items = full_task(graph_contrast_weight=0.5, graph_contrast_noise=0.2)
    losses = step_losses(task, users, items, torch.optim.Adam(task.parameters(), lr=0.02), epochs=1, steps=40,
                         batch=128)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


@pytest.mark.parametrize("model,step,message", [
    (dict(propagation_layers=0), "full", "has none"),
    (dict(propagation_layers=2), "sampled", "graph_contrast_weight"),
])
def test_without_a_full_graph_propagation_the_term_is_refused_with_a_message(model, step, message):
    with pytest.raises(ValueError, match=message):
        synthetic_task(600, 80, ModelConfig(dim=16, **model), LossConfig(step=step, graph_contrast_weight=0.1), seed=3)


def test_the_term_off_leaves_the_run_fingerprint_as_before():
    from training.config import TrainConfig
    before = "2abbd56553c3abd6"  # TrainConfig().fingerprint() before the option existed
    assert TrainConfig().fingerprint() == before
    assert TrainConfig(loss=LossConfig(graph_contrast_weight=0.0, graph_contrast_noise=0.1,
                                       graph_contrast_temperature=0.2)).fingerprint() == before
    assert TrainConfig(loss=LossConfig(graph_contrast_weight=0.1)).fingerprint() != before
