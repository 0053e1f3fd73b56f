"""A closed-form member of the served ensemble: EASE's item-item weights as a history table and an item table.

Why: on dense data the closed-form item-item model EASE (`recsys.baselines.ease`) ranks level with or above
the trained towers, and mixing kinds of models is what our ensembles gain from (BENCHMARKS.md, "EASE: a
stronger classic baseline"). EASE scores item j for a user with history h as sum_{i in h} B[i, j]. At rank r,
B ~ H V^T (H = U S, V from an SVD), so the score is (sum_{i in h} H[i]) . V[j]: a user vector that is a sum of
history-table rows, and a fixed item vector. Both parts are unit-norm like every other member's (the item part
either a unit V row, or V's row with its relative length kept and the extra coordinate filling it to 1:
`item_part`), so the member joins `MemberConcat` with a weight and the run still serves as one user vector .
item vectors.

Items EASE cannot score (no train interaction: B's row and column are zero) get the unit vector on an extra
coordinate that every user vector leaves at 0: a unit item part that scores 0 for everyone, so a cold or
live-added item is neither boosted nor penalised by the member (a zero part would grow its other parts when
the concatenation is normalised).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.artifact import l2_normalise
from recsys.models.user_tower import segment_sum

CLOSED_FORM_KIND = "ease_history_table"


def factor_weights(weights: np.ndarray, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(history table H = U_r S_r, item table V_r), both (n_items, rank), with B ~ H V^T (randomised SVD).

    Randomised (torch.svd_lowrank) because a full SVD of an n x n matrix is minutes at 10k items; four
    power iterations make the top-r factors as good as the exact ones for ranking (`tests/test_closed_form_member.py`).
    """
    n = weights.shape[0]
    rank = max(1, min(int(rank), n - 1))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        left, spread, right = torch.svd_lowrank(torch.as_tensor(weights, dtype=torch.float32), q=rank, niter=4)
    finally:
        torch.random.set_rng_state(generator_state)
    return (left * spread).numpy().astype(np.float32), right.numpy().astype(np.float32)


def item_part(item_table: np.ndarray, scorable: np.ndarray, keep_norms: bool = False) -> np.ndarray:
    """(n_items, rank + 1) unit item vectors: V's rows for `scorable` items, the extra unit coordinate otherwise.

    `keep_norms`: the rows keep their relative lengths (divided by the longest), and the extra coordinate
    fills each to unit length (Bachrach et al. 2014's inner-product-to-cosine step). Users leave that coordinate
    at 0, so the member scores normalise(u) . V[j] / max|V|, EASE's own low-rank score up to a per-user scale
    (a column's length says how strongly the model predicts that item at all), yet every item part is unit-norm
    as `MemberConcat` needs. Which form serves is chosen on valid (`ease.item_forms`).
    """
    out = np.zeros((item_table.shape[0], item_table.shape[1] + 1), np.float32)
    norms = np.linalg.norm(item_table, axis=1)
    unscorable = ~np.asarray(scorable, bool) | (norms < 1e-8)
    if keep_norms and (~unscorable).any():
        scaled = item_table / norms[~unscorable].max()
        out[:, :-1] = scaled
        out[:, -1] = np.sqrt(np.clip(1.0 - (scaled.astype(np.float64) ** 2).sum(axis=1), 0.0, None))
    else:
        out[:, :-1] = l2_normalise(item_table)
    out[unscorable] = new_item_part(item_table.shape[1], int(unscorable.sum()))
    return out


def new_item_part(rank: int, n: int = 1) -> np.ndarray:
    """The member's part of items it has never seen (added live): the extra unit coordinate."""
    out = np.zeros((n, rank + 1), np.float32)
    out[:, -1] = 1.0
    return out


class HistoryTableTower(nn.Module):
    """History -> the member's unit user part: normalise(sum of `history_table` rows), then the extra 0.

    With `half_life` h > 0 an item `age` events from the end of the history counts 2^(-age/h) (EASE's own
    form is h = 0: every item once); on a next-item task the latest items say most about the next one.
    Same input as `ServedUserTower` (jagged histories, `history_tensors`), so `MemberConcat`, the ONNX
    export and the request batching serve it unchanged. A user without history gets zeros.
    """

    def __init__(self, history_table: torch.Tensor | np.ndarray, half_life: float = 0.0):
        super().__init__()
        self.register_buffer("history_table", torch.as_tensor(np.asarray(history_table, np.float32)))
        self.half_life = float(half_life)

    @property
    def n_items(self) -> int:
        return int(self.history_table.shape[0])

    @property
    def rank(self) -> int:
        return int(self.history_table.shape[1])

    @property
    def output_dim(self) -> int:
        return self.rank + 1

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, segment: torch.Tensor,
                age: torch.Tensor) -> torch.Tensor:
        rows = self.history_table.index_select(0, items)
        if self.half_life > 0:
            rows = rows * torch.exp(age * (-np.log(2.0) / self.half_life)).unsqueeze(1)
        summed = segment_sum(rows, segment, lengths.shape[0])
        unit = nn.functional.normalize(summed, dim=1)
        return torch.cat([unit, torch.zeros_like(unit[:, :1])], dim=1)

    def payload(self) -> dict[str, Any]:
        """What `user_encoder.pt` holds for the member: one table, plain values (weights_only loads it)."""
        return {"kind": CLOSED_FORM_KIND, "n_items": self.n_items, "rank": self.rank, "half_life": self.half_life,
                "state": {"history_table": self.history_table.detach().clone()}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "HistoryTableTower":
        table = payload["state"]["history_table"]
        if tuple(table.shape) != (int(payload["n_items"]), int(payload["rank"])):
            raise ValueError(f"history table has shape {tuple(table.shape)}, the payload says "
                             f"({payload['n_items']}, {payload['rank']})")
        if not torch.isfinite(table).all():
            raise ValueError("history table holds NaN or infinite values")
        return cls(table, float(payload.get("half_life", 0.0))).eval()
