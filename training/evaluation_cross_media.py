"""The `cross-media` task: do a model's per-medium item vectors land in one shared space?

For each query item, its vector in medium A ranks the candidates' vectors in medium B; a hit
is the query's own B vector in the top k. Queries are the held-out items (items with no train
interaction — on TikTok the 465 items never in `train`), so alignment is tested on items the
model never saw interactions for. Candidates are either those same held-out items (the main
figure; chance = k / n_held_out) or all items (`*_all_items`). Items whose vector is a zero row
(medium missing) are neither queries nor candidates for that pair.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from recsys.data.schema import MEDIA
from training.evaluation_protocol import EvaluationError

K = 10


def cross_media_report(media_vectors: dict[str, np.ndarray], held_out_items: np.ndarray, k: int = K) -> dict[str, Any]:
    """Recall@k of every ordered pair of media present in `media_vectors` (rows = dataset item index)."""
    media = [m for m in MEDIA if m in media_vectors] + sorted(set(media_vectors) - set(MEDIA))
    if len(media) < 2:
        raise EvaluationError(f"cross-media needs item vectors of two media, found {media or 'none'}")
    if len(held_out_items) == 0:
        raise EvaluationError("cross-media needs held-out items (items never in train); this split has none")
    all_items = np.arange(next(iter(media_vectors.values())).shape[0])
    report: dict[str, Any] = {"held_out": "items with no train interaction", "n_held_out": int(len(held_out_items)),
                              "n_items": int(len(all_items)), f"chance@{k}": min(1.0, k / len(held_out_items)),
                              f"chance@{k}_all_items": min(1.0, k / len(all_items))}
    for a in media:
        for b in media:
            if a == b:
                continue
            qa, tb = media_vectors[a], media_vectors[b]
            present = _present(qa) & _present(tb)
            queries = held_out_items[present[held_out_items]]
            name = f"{a}_to_{b}_recall@{k}"
            report[name] = cross_media_recall(qa, tb, queries, queries, k)
            report[f"{name}_all_items"] = cross_media_recall(qa, tb, queries, all_items[_present(tb)], k)
    return report


def cross_media_recall(query_vectors: np.ndarray, target_vectors: np.ndarray, queries: np.ndarray,
                       candidates: np.ndarray, k: int = K, block: int = 1024) -> float | None:
    """Share of `queries` whose own target vector is among the top k candidates by dot product.

    Rank = number of candidates scoring strictly higher than the query's own target, so ties
    count in the query's favour only against equal scores (rare with float vectors).
    """
    if len(queries) == 0:
        return None
    tgt = np.asarray(target_vectors[candidates], dtype=np.float32)
    hits = 0
    for start in range(0, len(queries), block):
        q = queries[start:start + block]
        qv = np.asarray(query_vectors[q], dtype=np.float32)
        scores = qv @ tgt.T
        own = np.einsum("ij,ij->i", qv, np.asarray(target_vectors[q], dtype=np.float32))
        rank = (scores > own[:, None] + 1e-7).sum(1)
        hits += int((rank < k).sum())
    return hits / len(queries)


def _present(vectors: np.ndarray) -> np.ndarray:
    return np.abs(vectors).sum(axis=1) > 0
