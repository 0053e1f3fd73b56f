"""Getting new items in front of people: exploration slots and the new-item prior.

The policy is defined once in `recsys.new_items` (shared with the offline evaluation); here it
is applied to a request, configurable with `RECSYS_SERVE_EXPLORE_*` and `RECSYS_SERVE_NEW_ITEM_BOOST`:

* **new-item prior**: `boost` is added to the score of live items younger than `window_s`, so a
  good content match enters the ranked list on merit (deterministic: propensity 1);
* **exploration slots**: a share of feed positions is given to fresh items, drawn at random with
  probabilities softmax(content match with the user / temperature). The probability of each
  draw is its *propensity*, logged with the exposure (``propensities`` aligned with ``items``),
  so off-policy estimators can correct for it. Exploited items have propensity 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recsys.new_items import NewItemPolicy, slot_positions
from serving.catalogue import LiveSnapshot, media_bits


@dataclass(frozen=True)
class ExplorationPolicy(NewItemPolicy):
    """`recsys.new_items.NewItemPolicy` for live items: fresh = added within `window_s`. A negative
    `boost` means "the run's own" (`Retriever.new_item_boost`, recorded in run.json)."""

    def boost_for(self, run_boost: float) -> float:
        return run_boost if self.boost < 0 else self.boost

    def fresh_after(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.window_s

    def slots(self, k: int) -> list[int]:
        return slot_positions(k, self.share)


def explore(policy: ExplorationPolicy, snap: LiveSnapshot, n_base: int, ranked: np.ndarray, scores: np.ndarray,
            query: np.ndarray | None, k: int, media: frozenset[str] | None, exclude: np.ndarray | None,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Insert exploration draws into a ranked list: (indexes, scores, propensities), at most k long."""
    indexes, scores = list(ranked.tolist()), list(scores.tolist())
    propensities = [1.0] * len(indexes)
    positions = policy.slots(k)
    if not positions or snap.count == 0:
        return ranked[:k], np.asarray(scores[:k], np.float32), propensities[:k]
    n = snap.count
    fresh = snap.alive[:n] & (snap.added_at[:n] >= policy.fresh_after())
    if media:
        fresh &= (snap.media_bits[:n] & np.int8(media_bits(media))) != 0
    taken = np.asarray([i - n_base for i in indexes if i >= n_base], np.int64)
    if len(taken):
        fresh[taken] = False
    if exclude is not None and len(exclude):
        rows = np.asarray(exclude, np.int64) - n_base
        fresh[rows[(rows >= 0) & (rows < n)]] = False
    candidates = np.flatnonzero(fresh)
    if not len(candidates):
        return ranked[:k], np.asarray(scores[:k], np.float32), propensities[:k]
    match = snap.vectors[candidates] @ query if query is not None and np.any(query) else np.zeros(len(candidates), np.float32)
    logits = (match - match.max()) / max(policy.temperature, 1e-6)
    for position in positions:
        if not len(candidates):
            break
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        pick = int(rng.choice(len(candidates), p=probs))
        at = min(position, len(indexes))
        indexes.insert(at, int(candidates[pick]) + n_base)
        scores.insert(at, float(match[pick]))
        propensities.insert(at, round(float(probs[pick]), 6))
        candidates, match, logits = (np.delete(candidates, pick), np.delete(match, pick), np.delete(logits, pick))
    return np.asarray(indexes[:k], np.int64), np.asarray(scores[:k], np.float32), propensities[:k]
