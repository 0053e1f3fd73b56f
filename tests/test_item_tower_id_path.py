"""ID embedding vs content path: cold items (no train interaction) and ID-dropped warm items are
served from content alone; surviving warm items use their ID row (fallback) or ID + content (add).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.models import ItemCatalog, ItemTower, ModelConfig
from recsys.models.item_tower import ITEM_ID_FEATURE

N, D = 200, 16
COUNTS = np.where(np.arange(N) < 150, 3, 0)  # items 150..199 never in train: cold


def catalog() -> ItemCatalog:
    rng = np.random.default_rng(0)
    feats = {"image": rng.normal(size=(N, 12)).astype(np.float32), "audio": rng.normal(size=(N, 6)).astype(np.float32)}
    masks = {"image": np.ones(N, bool), "audio": np.arange(N) % 4 != 0}
    return ItemCatalog.from_arrays(feats, masks, COUNTS)


def tower(mode: str, dropout: float, **options) -> ItemTower:
    torch.manual_seed(0)
    t = ItemTower(ModelConfig(dim=D, content_mode=mode, id_dropout=dropout, **options), N, {"image": 12, "audio": 6})
    t.fit_statistics(catalog())
    return t


def id_rows(t: ItemTower) -> torch.Tensor:
    return next(iter(t.id_embedding.parameters())).detach()


def test_catalog_marks_only_train_items_as_having_an_id():
    cat = catalog()
    assert cat.has_id.tolist() == (COUNTS > 0).tolist()


@pytest.mark.parametrize("scale", ["raw", "id"])
@pytest.mark.parametrize("mode", ["fallback", "add", "gated"])
@pytest.mark.parametrize("training", [False, True])
def test_cold_items_take_the_content_path(mode, training, scale):
    t = tower(mode, dropout=0.3, content_scale=scale, content_gate_init=0.3).train(training)
    with torch.no_grad():
        enc = t(catalog(), torch.Generator().manual_seed(1))
    cold = ~catalog().has_id
    assert torch.allclose(enc.base[cold], enc.content[cold], atol=1e-6)


def test_cold_item_vector_ignores_its_id_row_and_follows_its_content():
    t = tower("fallback", dropout=0.0).eval()
    cat = catalog()
    with torch.no_grad():
        before = t(cat).base.clone()
        id_rows_param = next(iter(t.id_embedding.parameters()))
        id_rows_param[150:] += 5.0  # scribble on the cold items' (untrained) ID rows
        after = t(cat).base
        assert torch.equal(before[150:], after[150:])
        cat.features["image"][160] += 1.0
        moved = t(cat).base
    assert not torch.allclose(moved[160], after[160]) and torch.equal(moved[:150], after[:150])


def test_eval_mode_warm_items_use_their_id_row_in_fallback_mode():
    t = tower("fallback", dropout=0.5).eval()  # dropout is a training-time regulariser only
    with torch.no_grad():
        enc = t(catalog())
    assert torch.allclose(enc.base[:150], id_rows(t)[:150], atol=1e-6)


def test_add_mode_warm_items_are_id_plus_content():
    t = tower("add", dropout=0.0).eval()
    with torch.no_grad():
        enc = t(catalog())
    assert torch.allclose(enc.base[:150], id_rows(t)[:150] + enc.content[:150], atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.3, 0.7])
def test_id_dropout_serves_that_share_of_warm_items_from_content(dropout):
    t = tower("fallback", dropout=dropout).train()
    with torch.no_grad():
        enc = t(catalog(), torch.Generator().manual_seed(3))
    warm_content = torch.isclose(enc.base[:150], enc.content[:150], atol=1e-6).all(1)
    warm_id = torch.isclose(enc.base[:150], id_rows(t)[:150], atol=1e-6).all(1)
    assert bool((warm_content ^ warm_id).all())  # each warm item takes exactly one path
    share = warm_content.float().mean().item()
    assert share == pytest.approx(dropout, abs=0.12)
    if dropout == 0.0:
        assert share == 0.0


def test_id_features_are_one_bag_per_item_empty_for_cold():
    t = tower("fallback", dropout=0.0).eval()
    kjt, keep = t.id_features(catalog().has_id)
    lengths = kjt[ITEM_ID_FEATURE].lengths()
    assert lengths.tolist() == [1] * 150 + [0] * 50 and keep.tolist() == [True] * 150 + [False] * 50
    assert kjt[ITEM_ID_FEATURE].values().tolist() == list(range(150))


def test_content_scale_id_keeps_the_direction_at_the_warm_id_rows_mean_length():
    """content_scale = "id": the content vector an item is served from points where the projection
    points, at the mean length of the warm items' ID rows (so it cannot swamp them), not its own."""
    raw, scaled = tower("fallback", dropout=0.0).eval(), tower("fallback", dropout=0.0, content_scale="id").eval()
    with torch.no_grad():
        a, b = raw(catalog()), scaled(catalog())
        target = id_rows(scaled)[:150].norm(dim=1).mean()
    assert torch.allclose(b.content.norm(dim=1), target.expand(N), atol=1e-5)
    assert torch.allclose(torch.nn.functional.normalize(a.content, dim=1), b.content / target, atol=1e-5)
    assert not torch.allclose(a.content.norm(dim=1), b.content.norm(dim=1), atol=1e-2)  # the raw lengths differ
    assert torch.allclose(b.base[:150], id_rows(scaled)[:150], atol=1e-6)  # warm items: their ID rows, as before


def test_content_scale_id_is_the_same_for_a_subset_of_rows():
    """The target length is read from the whole ID table, so the sampled step's rows agree with the full pass."""
    t = tower("gated", dropout=0.0, content_scale="id", content_gate_init=0.5).eval()
    rows = torch.tensor([3, 151, 40, 199])
    with torch.no_grad():
        full, part = t(catalog()), t(catalog(), rows=rows)
    assert torch.allclose(full.base[rows], part.base, atol=1e-6)


def test_gated_mode_warm_items_are_id_plus_gate_times_content_and_the_gate_learns():
    t = tower("gated", dropout=0.0, content_scale="id", content_gate_init=0.0).eval()
    enc = t(catalog())
    assert torch.allclose(enc.base[:150], id_rows(t)[:150], atol=1e-6)  # gate 0: the ID rows alone
    (enc.base[:150] * torch.randn(150, D, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert t.content_gate.grad is not None and float(t.content_gate.grad.abs()) > 0
    with torch.no_grad():
        t.content_gate.fill_(0.5)
        enc = t(catalog())
    assert torch.allclose(enc.base[:150], id_rows(t)[:150] + 0.5 * enc.content[:150], atol=1e-5)


def test_gated_mode_serves_dropped_warm_items_from_content():
    t = tower("gated", dropout=0.5, content_scale="id", content_gate_init=0.5).train()
    with torch.no_grad():
        enc = t(catalog(), torch.Generator().manual_seed(3))
    from_content = torch.isclose(enc.base[:150], enc.content[:150], atol=1e-6).all(1)
    mixed = torch.isclose(enc.base[:150], id_rows(t)[:150] + 0.5 * enc.content[:150], atol=1e-5).all(1)
    assert bool((from_content ^ mixed).all()) and 0.3 < from_content.float().mean().item() < 0.7


def test_gated_mode_with_raw_content_scale_adds_the_id_scaled_direction_and_falls_back_to_raw_content():
    t = tower("gated", dropout=0.0, content_scale="raw", content_gate_init=0.5).eval()
    with torch.no_grad():
        enc = t(catalog())
        target = id_rows(t)[:150].norm(dim=1).mean()
    on_id_scale = torch.nn.functional.normalize(enc.content, dim=1) * target
    assert torch.allclose(enc.base[:150], id_rows(t)[:150] + 0.5 * on_id_scale[:150], atol=1e-5)
    assert torch.allclose(enc.base[150:], enc.content[150:], atol=1e-6)  # cold: the raw content
    assert not torch.allclose(enc.content.norm(dim=1), target.expand(N), atol=1e-2)
