"""Item tower fusion with missing media: every strategy gives finite, unit-normalisable vectors,
ignores whatever sits in a missing medium's feature row, and the full two-tower output stays unit-norm.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from recsys.models import GraphContext, ItemCatalog, ItemTower, ModelConfig, TwoTower, UserHistories
from recsys.models.fusion import FUSIONS

DIMS = {"image": 8, "audio": 5}
# item 0: image+audio, 1: image only, 2: audio only, 3: nothing, 4-7: image+audio
PRESENT = {"image": np.array([1, 1, 0, 0, 1, 1, 1, 1], bool), "audio": np.array([1, 0, 1, 0, 1, 1, 1, 1], bool)}
N = len(PRESENT["image"])


def catalog(garbage: float = 0.0, seed: int = 0) -> ItemCatalog:
    """Features of present media ~ N(0, 1); rows of missing media hold `garbage` * N(0, 1) (0 = zeros)."""
    rng = np.random.default_rng(seed)
    features = {}
    for medium, d in DIMS.items():
        x = rng.normal(size=(N, d)).astype(np.float32)
        noise = np.random.default_rng(99).normal(size=(N, d)).astype(np.float32)
        x[~PRESENT[medium]] = garbage * noise[~PRESENT[medium]]
        features[medium] = x
    return ItemCatalog.from_arrays(features, PRESENT, np.array([3, 1, 2, 0, 5, 1, 1, 2]))


def tower(fusion: str, **kw) -> ItemTower:
    torch.manual_seed(0)
    t = ItemTower(ModelConfig(dim=16, fusion=fusion, id_embedding=False, **kw), N, DIMS)
    t.fit_statistics(catalog())
    return t.eval()


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_missing_medium_gives_finite_unit_vector(fusion):
    with torch.no_grad():
        enc = tower(fusion)(catalog())
    assert torch.isfinite(enc.content).all() and torch.isfinite(enc.base).all()
    unit = F.normalize(enc.content, dim=1)
    has_any = torch.tensor([True, True, True, False, True, True, True, True])
    assert torch.allclose(unit[has_any].norm(dim=1), torch.ones(int(has_any.sum())), atol=1e-5)
    assert enc.content[has_any].norm(dim=1).min() > 1e-3  # one-medium items are not collapsed to zero
    assert torch.equal(enc.content[3], torch.zeros(16))  # no media at all: empty content, not NaN
    # per-medium projections are zero exactly where the medium is missing
    assert torch.equal(enc.media["audio"][1], torch.zeros(16)) and torch.equal(enc.media["image"][2], torch.zeros(16))


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_missing_medium_row_content_is_ignored(fusion):
    t = tower(fusion)
    with torch.no_grad():
        clean, noisy = t(catalog(garbage=0.0)).content, t(catalog(garbage=100.0)).content
    assert torch.allclose(clean, noisy, atol=1e-6)


@pytest.mark.parametrize("fusion", ["weighted", "gated_attention"])
def test_single_medium_item_is_its_own_projection(fusion):
    """Weights are renormalised over present media: an audio-only item is exactly its audio projection."""
    with torch.no_grad():
        enc = tower(fusion)(catalog())
    assert torch.allclose(enc.content[2], enc.media["audio"][2], atol=1e-6)
    assert torch.allclose(enc.content[1], enc.media["image"][1], atol=1e-6)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_two_tower_items_are_unit_and_finite_with_missing_media(fusion):
    torch.manual_seed(0)
    config = ModelConfig(dim=16, fusion=fusion, content_mode="fallback", item_knn=0, propagation_layers=0)
    model = TwoTower(config, N, 3, DIMS).eval()
    model.item_tower.fit_statistics(catalog())
    histories = UserHistories.from_lists([[0, 1], [2], [4, 5, 6]])
    with torch.no_grad():
        out = model(catalog(), histories, GraphContext())
    assert torch.isfinite(out.items).all() and torch.isfinite(out.users).all()
    assert torch.allclose(out.items.norm(dim=1), torch.ones(N), atol=1e-5)
    assert torch.allclose(out.users.norm(dim=1), torch.ones(3), atol=1e-5)
