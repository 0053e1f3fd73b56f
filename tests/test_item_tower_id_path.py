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


def tower(mode: str, dropout: float) -> ItemTower:
    torch.manual_seed(0)
    t = ItemTower(ModelConfig(dim=D, content_mode=mode, id_dropout=dropout), N, {"image": 12, "audio": 6})
    t.fit_statistics(catalog())
    return t


def id_rows(t: ItemTower) -> torch.Tensor:
    return next(iter(t.id_embedding.parameters())).detach()


def test_catalog_marks_only_train_items_as_having_an_id():
    cat = catalog()
    assert cat.has_id.tolist() == (COUNTS > 0).tolist()


@pytest.mark.parametrize("mode", ["fallback", "add"])
@pytest.mark.parametrize("training", [False, True])
def test_cold_items_take_the_content_path(mode, training):
    t = tower(mode, dropout=0.3).train(training)
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
