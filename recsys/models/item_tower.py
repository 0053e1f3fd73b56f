"""The item tower: content media fused into one vector, plus an item-ID embedding for warm items.

A new item has no ID row worth trusting (it never appeared in train), so the tower is trained
with ID dropout: every step a share of warm items is served from content alone, which teaches the
content path to stand on its own. Cold items always take the content-only path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.models.config import ModelConfig
from recsys.models.fusion import MediumProjection, build_fusion
from recsys.models.popularity_prior import standardised_log_counts

ITEM_ID_FEATURE = "item_id"


@dataclass
class ItemCatalog:
    """Everything the item tower reads about the catalogue (data, not parameters).

    Attributes:
        media: medium names, in the column order of `present`.
        features: medium -> (n_items, d_medium) encoder outputs; rows of items without it are zeros.
        present: (n_items, n_media) bool, which media each item has.
        has_id: (n_items,) bool, items with a trained ID row (seen in train).
        popularity: (n_items,) standardised log train count (the popularity prior's input).
    """

    media: tuple[str, ...]
    features: dict[str, torch.Tensor]
    present: torch.Tensor
    has_id: torch.Tensor
    popularity: torch.Tensor

    @property
    def n_items(self) -> int:
        return int(self.present.shape[0])

    def subset(self, rows: torch.Tensor) -> "ItemCatalog":
        """The catalogue restricted to items `rows` (in that order)."""
        return ItemCatalog(self.media, {m: f.index_select(0, rows) for m, f in self.features.items()},
                           self.present.index_select(0, rows), self.has_id.index_select(0, rows),
                           self.popularity.index_select(0, rows))

    @classmethod
    def from_arrays(cls, features: dict[str, np.ndarray], masks: dict[str, np.ndarray], counts: np.ndarray) -> "ItemCatalog":
        media = tuple(features)
        present = np.stack([np.asarray(masks[m], dtype=bool) for m in media], axis=1) if media else \
            np.zeros((len(counts), 0), dtype=bool)
        return cls(media, {m: torch.as_tensor(features[m], dtype=torch.float32) for m in media},
                   torch.as_tensor(present), torch.as_tensor(np.asarray(counts) > 0), standardised_log_counts(counts))


@dataclass
class ItemEncoding:
    """Item tower output: fused base vectors and each medium's projection (for alignment and export)."""

    base: torch.Tensor  # (n_items, dim)
    media: dict[str, torch.Tensor]  # medium -> (n_items, dim), zero rows where the item lacks it
    content: torch.Tensor  # (n_items, dim) fused content alone (what a cold item is)


class ItemTower(nn.Module):
    """Embeds items: per-medium projection -> fusion (masked over present media) + ID EmbeddingBag.

    Args:
        config: the model config (dim, fusion, id_embedding, id_dropout, ...).
        n_items: rows of the ID table.
        media_dims: medium -> encoder output width, in catalogue order.
    Example::
        tower = ItemTower(ModelConfig(), 6710, {"image": 128, "audio": 128}); enc = tower(catalog)
    """

    def __init__(self, config: ModelConfig, n_items: int, media_dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.media = tuple(media_dims)
        self.projections = nn.ModuleDict({
            m: MediumProjection(d, config.dim, config.projection_hidden, config.feature_dropout) for m, d in media_dims.items()})
        self.fusion = build_fusion(config.fusion, len(self.media), config.dim) if self.media else None
        self.id_embedding = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="item_id_table", embedding_dim=config.dim, num_embeddings=n_items,
            feature_names=[ITEM_ID_FEATURE], pooling=PoolingType.SUM)], device=torch.device("cpu")) \
            if config.id_embedding else None
        if self.id_embedding is not None:
            for weight in self.id_embedding.parameters():
                nn.init.normal_(weight, std=config.id_init_std)
        if config.content_mode == "gated":
            self.content_gate = nn.Parameter(torch.tensor(float(config.content_gate_init)))

    def fit_statistics(self, catalog: ItemCatalog) -> None:
        """Standardise each medium with catalogue statistics (items that have it)."""
        for j, medium in enumerate(self.media):
            self.projections[medium].set_statistics(catalog.features[medium].numpy(), catalog.present[:, j].numpy())

    def project(self, medium: str, features: torch.Tensor) -> torch.Tensor:
        """One medium's encoder output -> item space (not normalised); the search path uses this."""
        return self.projections[medium](features)

    def id_features(self, has_id: torch.Tensor, generator: torch.Generator | None = None,
                    ids: torch.Tensor | None = None) -> tuple[KeyedJaggedTensor, torch.Tensor]:
        """One bag per item: its own ID if it has a row (and survives ID dropout), else an empty bag; + the keep mask.

        `ids`: the items' table rows when `has_id` covers a subset of the catalogue (None: all, in order),
        so the lookup touches those rows only.
        """
        keep = has_id.clone()
        if self.training and self.config.id_dropout > 0:
            keep &= torch.rand(len(keep), generator=generator) >= self.config.id_dropout
        ids = torch.arange(len(keep), dtype=torch.long) if ids is None else ids
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=[ITEM_ID_FEATURE], values=ids[keep], lengths=keep.to(torch.int32))
        return kjt, keep

    def forward(self, catalog: ItemCatalog, generator: torch.Generator | None = None,
                rows: torch.Tensor | None = None) -> ItemEncoding:
        """Encode the catalogue, or only its items `rows` (the sampled training step): same maths per item."""
        assert catalog.media == self.media, f"catalogue media {catalog.media} != tower media {self.media}"
        id_scale = self.id_scale(catalog.has_id) if self.id_embedding is not None and \
            (self.config.content_scale == "id" or self.config.content_mode == "gated") else None
        if rows is not None:
            catalog = catalog.subset(rows)
        n = catalog.n_items
        media = {m: self.project(m, catalog.features[m]) * catalog.present[:, j:j + 1]
                 for j, m in enumerate(self.media)}
        if self.fusion is not None:
            content = self.fusion(torch.stack([media[m] for m in self.media], dim=1), catalog.present)
        else:
            content = torch.zeros(n, self.config.dim)
        if self.id_embedding is None:
            return ItemEncoding(content, media, content)
        on_id_scale = nn.functional.normalize(content, dim=1) * id_scale if id_scale is not None else None
        if self.config.content_scale == "id":
            content = on_id_scale
        kjt, keep = self.id_features(catalog.has_id, generator, rows)
        ids = self.id_embedding(kjt)[ITEM_ID_FEATURE]
        if self.config.content_mode == "fallback":
            base = torch.where(keep.unsqueeze(1), ids, content)
        elif self.config.content_mode == "gated":  # the gate always weighs content on the ID rows' scale
            base = torch.where(keep.unsqueeze(1), ids + self.content_gate * on_id_scale, content)
        else:
            base = ids + content
        return ItemEncoding(base, media, content)

    def id_scale(self, has_id: torch.Tensor) -> torch.Tensor:
        """Mean length of the warm items' ID rows (whole table, no gradient): `content_scale = "id"`'s target.

        Read from the table itself, not from the rows a step looks up, so the full and the sampled step
        give an item the same vector."""
        with torch.no_grad():
            table = next(iter(self.id_embedding.parameters()))
            rows = table[has_id] if bool(has_id.any()) else table
            return rows.norm(dim=1).mean()
