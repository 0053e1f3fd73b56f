"""Per-medium projections into the shared space and the strategies that fuse them into one vector.

Every fusion sees a mask of the media an item actually has, so an audio-only item is not dragged
towards zero by its missing image: weights and attention are renormalised over present media.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys.models.config import FusionKind


class MediumProjection(nn.Module):
    """Encoder output of one medium -> the d-dim item space (standardised, then linear or a 1-hidden MLP).

    The standardisation statistics are buffers (computed from the catalogue at build time) so the
    same transform is applied to a search query at serving time (`recsys.models.project_content`).

    Args:
        in_dim: encoder output width; dim: item space width; hidden: MLP width (0 = linear).
    Example::
        proj = MediumProjection(128, 64); z = proj(image_features)  # (n, 64)
    """

    def __init__(self, in_dim: int, dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        self.net = nn.Linear(in_dim, dim) if hidden == 0 else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def set_statistics(self, features: np.ndarray, present: np.ndarray) -> None:
        rows = features[np.asarray(present, dtype=bool)]
        if len(rows) > 1:
            self.mean.copy_(torch.as_tensor(rows.mean(0), dtype=torch.float32))
            self.std.copy_(torch.as_tensor(rows.std(0) + 1e-6, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.dropout((x - self.mean) / self.std))


class WeightedSumFusion(nn.Module):
    """w_image·image + w_audio·audio + ...: softmax weights renormalised over the media an item has."""

    def __init__(self, n_media: int, dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_media))

    def forward(self, projected: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.logits.expand(present.shape).masked_fill(~present, -1e9), dim=1) * present
        return (w.unsqueeze(-1) * projected).sum(1)


class ConcatMLPFusion(nn.Module):
    """[image | audio | ... | presence bits] -> MLP; missing media enter as zeros with their bit off."""

    def __init__(self, n_media: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_media * (dim + 1), 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, projected: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        zeroed = projected * present.unsqueeze(-1)
        out = self.mlp(torch.cat([zeroed.flatten(1), present.float()], dim=1))
        return out * present.any(1, keepdim=True)


class GatedAttentionFusion(nn.Module):
    """Gated attention (Ilse et al. 2018) over the present media: a_m ∝ exp(w·(tanh(V z_m) ⊙ σ(U z_m)))."""

    def __init__(self, n_media: int, dim: int, hidden: int = 32):
        super().__init__()
        self.v = nn.Linear(dim, hidden)
        self.u = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1, bias=False)

    def forward(self, projected: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        scores = self.w(torch.tanh(self.v(projected)) * torch.sigmoid(self.u(projected))).squeeze(-1)
        attn = torch.softmax(scores.masked_fill(~present, -1e9), dim=1) * present
        return (attn.unsqueeze(-1) * projected).sum(1)


FUSIONS: dict[str, type[nn.Module]] = {
    "weighted": WeightedSumFusion,
    "concat_mlp": ConcatMLPFusion,
    "gated_attention": GatedAttentionFusion,
}


def build_fusion(kind: FusionKind, n_media: int, dim: int) -> nn.Module:
    assert kind in FUSIONS, f"fusion must be one of {sorted(FUSIONS)}, got {kind!r}"
    return FUSIONS[kind](n_media, dim)
