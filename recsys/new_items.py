"""How a feed treats items nobody has interacted with yet: one definition for serving and evaluation.

A model trained before an item existed has no collaborative signal for it and its popularity
prior ranks it last (TikTok's 465 natural cold items: Recall@20 among all items .002, below
random .003). Two levers, the same online (`serving.catalogue_explore`) and offline
(`training.evaluation_cold_start`, `recsys evaluate --task cold-start`):

* **new-item prior** (`boost`): added to a new item's score, so a strong content match enters
  the ranked list on merit;
* **exploration slots** (`share` of the k positions, evenly spaced): each filled by a draw among
  new items with probability softmax(content score / `temperature`), without replacement. The
  draw's probability is its propensity (exploited items: 1). Sampling k items without
  replacement from a softmax is the top-k of score/T + Gumbel noise, which is how the offline
  evaluation draws a whole batch at once.

The defaults were chosen on TikTok's valid split with the default run (BENCHMARKS.md, "Live
catalogue"): boost 0.35 puts the natural cold items at 10.5x random among all items for a 1.8 %
relative loss of warm Recall@20; one exploration slot in 20 alone costs 2.1 %, so slots are off by
default (`RECSYS_SERVE_EXPLORE_SHARE` turns them on). The boost is in the run's score units
(cosine): another model may want another value, so `recsys train` records the policy in run.json
and serving reads it from there (runs that record none get no boost).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NewItemPolicy:
    """Args:
        boost: new-item prior, added to a new item's score (cosine units).
        share: fraction of feed positions reserved for new items (0: none).
        temperature: softmax temperature of exploration draws over content scores.
        window_s: serving only: an item added live counts as new for this long.
    """

    boost: float = 0.35
    share: float = 0.0
    temperature: float = 0.05
    window_s: float = 7 * 86400.0


def recorded_boost(run_meta: dict) -> float:
    """The new-item prior a run recorded in run.json (0 for runs that record none)."""
    policy = run_meta.get("new_item_policy")
    return float(policy.get("boost", 0.0)) if isinstance(policy, dict) else 0.0


def item_prior(boost: float, unseen: np.ndarray) -> np.ndarray:
    """(n_items,) float32 additive prior: `boost` on items without train interactions, 0 elsewhere."""
    return np.where(unseen, np.float32(boost), np.float32(0)).astype(np.float32)


def slot_positions(k: int, share: float) -> list[int]:
    """0-based feed positions given to exploration: round(k * share) of them (at least one when
    share > 0), evenly spaced, the first after the top results."""
    if share <= 0 or k <= 0:
        return []
    n = max(1, int(round(k * share)))
    period = k / n
    return sorted({min(k - 1, int(period * (i + 1)) - 1) for i in range(n)})


def gumbel_draws(scores: np.ndarray, n: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Row-wise indexes of `n` draws without replacement from softmax(scores / temperature) ((b, c) -> (b, n)).

    Entries of -inf are never drawn (unless a row has fewer than n finite entries)."""
    keys = scores / max(temperature, 1e-6) + rng.gumbel(size=scores.shape)
    if n >= scores.shape[1]:
        return np.argsort(-keys, axis=1)
    top = np.argpartition(-keys, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)
