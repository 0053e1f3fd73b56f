"""The answer for a user we know nothing about: popular items, made diverse by MMR.

A pure popularity list is a wall of near-duplicates (the top videos of one trend); maximal
marginal relevance trades a little popularity for content variety, so a new user sees the
catalogue's range and their first clicks tell us more. Computed once per model version and media
filter, never per request.
"""
from __future__ import annotations

import numpy as np


def mmr_order(vectors: np.ndarray, candidates: np.ndarray, relevance: np.ndarray, n: int, lam: float) -> np.ndarray:
    """Greedy maximal-marginal-relevance ordering of `candidates`, `n` long.

    Args:
        vectors: (n_items, d) L2-normalised item vectors.
        candidates: item indexes to choose from, most relevant first.
        relevance: relevance of each candidate, scaled to [0, 1].
        n: how many to pick.
        lam: weight of relevance against (1 - max similarity to what is already picked).
    """
    n = min(n, len(candidates))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cand_vecs = vectors[candidates]
    max_sim = np.full(len(candidates), -np.inf, dtype=np.float32)
    taken = np.zeros(len(candidates), dtype=bool)
    picked = np.empty(n, dtype=np.int64)
    for step in range(n):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lam * relevance - (1.0 - lam) * redundancy
        gain[taken] = -np.inf
        best = int(np.argmax(gain))
        picked[step] = best
        taken[best] = True
        max_sim = np.maximum(max_sim, cand_vecs @ cand_vecs[best])
    return candidates[picked]


def cold_start_list(vectors: np.ndarray, popularity: np.ndarray, allowed: np.ndarray | None, pool: int, n: int,
                    lam: float) -> np.ndarray:
    """Item indexes for an unknown user: MMR over the `pool` most popular allowed items."""
    eligible = np.flatnonzero(allowed) if allowed is not None else np.arange(len(popularity))
    order = eligible[np.argsort(-popularity[eligible], kind="stable")][:pool]
    pop = popularity[order].astype(np.float32)
    relevance = np.log1p(pop) / max(float(np.log1p(pop.max())), 1e-9) if len(pop) and pop.max() > 0 else np.zeros(len(pop), np.float32)
    head = mmr_order(vectors, order, relevance, n, lam)
    if len(head) >= n:
        return head
    # Fewer pool items than asked for: continue with the rest by popularity.
    rest = eligible[np.argsort(-popularity[eligible], kind="stable")]
    rest = rest[~np.isin(rest, head)][: n - len(head)]
    return np.concatenate([head, rest])
