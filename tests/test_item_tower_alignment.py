"""Cross-media InfoNCE alignment on a small controlled case.

Items share a latent z; image = z·A + noise, audio = tanh((z·B + noise)/3) (different maps, so a
fresh tower's image and audio projections live in unrelated bases). Items 0..399 have both media
(the only ones alignment may train on); items 400..439 are audio only, each a near-twin (z + 0.1
noise) of item 0..39. After aligning the projections, an audio-only item's fused vector must land
next to its multi-media twin, and its audio vector must retrieve the twin's *image* vector.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from recsys.models import GraphContext, ItemCatalog, ItemTower, LossConfig, ModelConfig, TaskInputs, TwoTower, \
    TwoTowerTrainTask, UserHistories
from recsys.models.losses import cross_media_alignment

N_MULTI, N_AUDIO_ONLY, LATENT = 400, 40, 8


def controlled_catalog() -> ItemCatalog:
    rng = np.random.default_rng(0)
    n = N_MULTI + N_AUDIO_ONLY
    z = rng.normal(size=(n, LATENT))
    z[N_MULTI:] = z[:N_AUDIO_ONLY] + 0.1 * rng.normal(size=(N_AUDIO_ONLY, LATENT))
    image = (z @ rng.normal(size=(LATENT, 24)) + 0.3 * rng.normal(size=(n, 24))).astype(np.float32)
    audio = np.tanh((z @ rng.normal(size=(LATENT, 20)) + 0.3 * rng.normal(size=(n, 20))) / 3).astype(np.float32)
    present = {"image": np.arange(n) < N_MULTI, "audio": np.ones(n, bool)}
    image[~present["image"]] = 0.0
    return ItemCatalog.from_arrays({"image": image, "audio": audio}, present, np.ones(n))


def neighbour_stats(tower: ItemTower, catalog: ItemCatalog) -> dict[str, float]:
    tower.eval()
    with torch.no_grad():
        enc = tower(catalog)
    tower.train()
    fused = F.normalize(enc.content, dim=1)
    image = F.normalize(enc.media["image"], dim=1)
    queries, twins = fused[N_MULTI:], torch.arange(N_AUDIO_ONLY)
    return {
        "cos_twin": (queries * fused[:N_AUDIO_ONLY]).sum(1).mean().item(),
        "twin_top1": ((queries @ fused[:N_MULTI].T).argmax(1) == twins).float().mean().item(),
        "audio_to_image_top1": ((queries @ image[:N_MULTI].T).argmax(1) == twins).float().mean().item(),
    }


@pytest.fixture(scope="module")
def aligned() -> dict[str, dict[str, float]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and much faster on a loaded machine
    try:
        return _align()
    finally:
        torch.set_num_threads(threads)


def _align() -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    catalog = controlled_catalog()
    tower = ItemTower(ModelConfig(dim=16, fusion="weighted", id_embedding=False), catalog.n_items, {"image": 24, "audio": 20})
    tower.fit_statistics(catalog)
    before = neighbour_stats(tower, catalog)
    eligible = catalog.present[:, 0] & catalog.present[:, 1]  # the multi-media items only
    opt = torch.optim.Adam(tower.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss = cross_media_alignment(tower(catalog, gen).media, catalog.present, eligible, 256, 0.1, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"before": before, "after": neighbour_stats(tower, catalog)}


def test_audio_only_item_lands_next_to_its_multimedia_twin(aligned):
    before, after = aligned["before"], aligned["after"]
    assert after["cos_twin"] > 0.9 and after["cos_twin"] > before["cos_twin"] + 0.15
    assert after["twin_top1"] >= 0.8  # nearest of 400 multi-media items (chance 1/400)


def test_audio_vector_retrieves_the_twin_image_vector_only_after_alignment(aligned):
    assert aligned["before"]["audio_to_image_top1"] < 0.2
    assert aligned["after"]["audio_to_image_top1"] >= 0.7


def test_alignment_weight_switches_the_alignment_term_on():
    torch.manual_seed(0)
    catalog = controlled_catalog()
    n_users = 5
    histories = UserHistories.from_lists([[0, 1], [2, 3, 4], [5], [6, 7], [8]])
    model = TwoTower(ModelConfig(dim=16, item_knn=0, propagation_layers=0), catalog.n_items, n_users, {"image": 24, "audio": 20})
    model.item_tower.fit_statistics(catalog)
    counts = torch.zeros(catalog.n_items)
    counts[:9] = 1
    inputs = TaskInputs(catalog, histories, GraphContext(), counts)
    users, items = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([1, 3, 5, 7, 8])
    off = TwoTowerTrainTask(model, LossConfig(alignment_weight=0.0), inputs)(users, items, torch.Generator().manual_seed(0))
    on = TwoTowerTrainTask(model, LossConfig(alignment_weight=0.5), inputs)(users, items, torch.Generator().manual_seed(0))
    assert "alignment" not in off[1] and "alignment" in on[1]
    assert torch.isfinite(on[0]) and on[1]["alignment"] > 0
    assert on[0].item() == pytest.approx(off[0].item() + 0.5 * on[1]["alignment"].item(), rel=1e-4)
