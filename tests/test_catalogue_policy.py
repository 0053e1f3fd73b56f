"""The new-item policy (`recsys.new_items`) and its serving side (`serving.catalogue_explore`):
slot positions, draws that follow softmax(score / T) without replacement, propensities that are
the probability of each draw, and the prior that lifts never-interacted items into a ranking."""
from __future__ import annotations

import numpy as np
import pytest

from recsys.artifact import l2_normalise
from recsys.new_items import gumbel_draws, slot_positions
from serving.catalogue import LiveCatalogue
from serving.catalogue_explore import ExplorationPolicy, explore


def test_slot_positions_are_evenly_spaced_and_follow_the_share():
    assert slot_positions(20, 0.0) == []
    assert slot_positions(20, 0.05) == [19]
    assert slot_positions(20, 0.1) == [9, 19]
    assert slot_positions(20, 0.25) == [3, 7, 11, 15, 19]
    assert slot_positions(3, 0.01) == [2]


def test_gumbel_draws_follow_the_softmax_first_draw():
    scores = np.log(np.array([[0.5, 0.3, 0.2]]))  # temperature 1: softmax = these probabilities
    rng = np.random.default_rng(0)
    firsts = np.array([gumbel_draws(scores, 2, 1.0, rng)[0, 0] for _ in range(20000)])
    freq = np.bincount(firsts, minlength=3) / len(firsts)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)
    pairs = gumbel_draws(np.tile(scores, (500, 1)), 2, 1.0, rng)
    assert (pairs[:, 0] != pairs[:, 1]).all()  # without replacement


def _live(n_base: int = 5, dim: int = 4) -> LiveCatalogue:
    live = LiveCatalogue(n_base, dim, {str(i): i for i in range(n_base)})
    vectors = l2_normalise(np.eye(dim, dtype=np.float32)[:3] + 0.1)
    for j, vector in enumerate(vectors):
        live.put(f"new-{j}", vector, ["image"], None, "v")
    return live


def test_exploration_slot_propensity_is_the_draw_probability():
    live = _live()
    snap = live.snapshot
    query = l2_normalise(np.array([[1.0, 0.2, 0.0, 0.0]], np.float32))[0]
    policy = ExplorationPolicy(share=0.25, temperature=0.1, boost=0.0)
    ranked, scores = np.array([0, 1, 2, 3]), np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    indexes, _, propensities = explore(policy, snap, 5, ranked, scores, query, 4, None, None, np.random.default_rng(1))
    assert len(indexes) == 4 and indexes[3] >= 5  # the one slot (position 3) holds a live item
    match = snap.vectors[:3] @ query
    probs = np.exp((match - match.max()) / 0.1)
    probs /= probs.sum()
    assert propensities[:3] == [1.0, 1.0, 1.0]
    assert propensities[3] == pytest.approx(probs[indexes[3] - 5], abs=1e-6)


def test_taken_down_and_excluded_live_items_are_never_explored():
    live = _live()
    live.delete("new-0")
    live.delete("new-1")
    snap = live.snapshot
    policy = ExplorationPolicy(share=0.5, temperature=0.1)
    query = np.array([1.0, 0, 0, 0], np.float32)
    for seed in range(20):
        indexes, _, _ = explore(policy, snap, 5, np.array([0, 1]), np.array([0.9, 0.8], np.float32), query, 4, None,
                                np.array([5 + 2]), np.random.default_rng(seed))
        assert not set(indexes.tolist()) & {5, 6, 7}
