"""The user tower: a user is their history (item ids + the items' content vectors), pooled.

No per-user parameters by default, so the same network embeds a user seen in training, a user
whose history grew since, and a brand-new user: serving passes a live history and gets a vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.models.config import ModelConfig

HISTORY_FEATURE = "history_item"
USER_ID_FEATURE = "user_id"


@dataclass
class UserHistories:
    """Jagged histories, oldest first: entry e belongs to user `segment[e]`, `age[e]` events from its end.

    Attributes:
        items: (n_entries,) item indices; lengths: (n_users,) history lengths;
        segment: (n_entries,) owning user row; age: (n_entries,) float, 0 = newest.
    """

    items: torch.Tensor
    lengths: torch.Tensor
    segment: torch.Tensor
    age: torch.Tensor

    @property
    def n_users(self) -> int:
        return int(self.lengths.shape[0])

    @classmethod
    def from_lists(cls, histories: list[list[int]] | list[np.ndarray]) -> "UserHistories":
        lengths = np.asarray([len(h) for h in histories], dtype=np.int64)
        items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if lengths.sum() else np.zeros(0, np.int64)
        return cls.from_flat(items, lengths)

    @classmethod
    def from_flat(cls, items: np.ndarray, lengths: np.ndarray) -> "UserHistories":
        lengths = np.asarray(lengths, dtype=np.int64)
        segment = np.repeat(np.arange(len(lengths)), lengths)
        ends = np.cumsum(lengths)
        age = (ends[segment] - 1 - np.arange(len(segment))).astype(np.float32) if len(segment) else np.zeros(0, np.float32)
        return cls(torch.as_tensor(np.asarray(items, dtype=np.int64)), torch.as_tensor(lengths),
                   torch.as_tensor(segment, dtype=torch.long), torch.as_tensor(age))


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of `scores` within each segment (a jagged softmax without padding)."""
    peak = torch.full((n_segments,), -torch.inf).scatter_reduce(0, segment, scores, reduce="amax", include_self=True)
    e = torch.exp(scores - peak[segment])
    return e / torch.zeros(n_segments).index_add(0, segment, e)[segment]


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    return torch.zeros(n_segments, values.shape[1], dtype=values.dtype).index_add(0, segment, values)


class UserTower(nn.Module):
    """Pools a history into a user vector: history-item EmbeddingBag (KJT) + attention/recency over item vectors.

    Args:
        config: model config (dim, user_pooling, recency_half_life, history_embedding, user_id_embedding).
        n_items: rows of the history-item table; n_users: rows of the optional user-ID table.
    Example::
        u0 = UserTower(ModelConfig(), 6710, 9308)(UserHistories.from_lists([[3, 7]]), item_vectors)
    """

    def __init__(self, config: ModelConfig, n_items: int, n_users: int = 0):
        super().__init__()
        self.config = config
        tables = []
        if config.history_embedding:
            tables.append(EmbeddingBagConfig(name="history_item_table", embedding_dim=config.dim, num_embeddings=n_items,
                                             feature_names=[HISTORY_FEATURE], pooling=PoolingType.SUM))
        self.history_embedding = EmbeddingBagCollection(tables=tables, is_weighted=True, device=torch.device("cpu")) \
            if tables else None
        self.user_embedding = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="user_id_table", embedding_dim=config.dim, num_embeddings=max(n_users, 1),
            feature_names=[USER_ID_FEATURE], pooling=PoolingType.SUM)], device=torch.device("cpu")) \
            if config.user_id_embedding else None
        for ebc in (self.history_embedding, self.user_embedding):
            if ebc is not None:
                for weight in ebc.parameters():
                    nn.init.normal_(weight, std=config.id_init_std)
        if config.user_pooling == "attention":
            self.attn_key = nn.Linear(config.dim, config.dim)
            self.attn_query = nn.Parameter(torch.zeros(config.dim))
        self.recency_logit = nn.Parameter(torch.zeros(()))  # attention: learned recency slope

    def pooling_weights(self, histories: UserHistories, item_vectors: torch.Tensor,
                        item_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Per-entry weights summing to 1 per user: recency-decayed mean, or attention + recency."""
        item_rows = histories.items if item_rows is None else item_rows
        h = self.config.recency_half_life
        log_decay = -histories.age * (np.log(2.0) / h) if h > 0 else torch.zeros_like(histories.age)
        if self.config.user_pooling == "attention":
            keys = torch.tanh(self.attn_key(item_vectors[item_rows]))
            log_decay = keys @ self.attn_query + log_decay - torch.nn.functional.softplus(self.recency_logit) * histories.age
        return segment_softmax(log_decay, histories.segment, histories.n_users)

    def forward(self, histories: UserHistories, item_vectors: torch.Tensor,
                user_ids: torch.Tensor | None = None, item_rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n_users, dim) layer-0 user vectors; users with an empty history get zeros (+ their ID row if any).

        `item_rows`: each history entry's row in `item_vectors` when those are the vectors of a subset of
        the catalogue (the sampled training step); None: `item_vectors` is the whole catalogue.
        """
        item_rows = histories.items if item_rows is None else item_rows
        weights = self.pooling_weights(histories, item_vectors, item_rows)
        out = segment_sum(weights.unsqueeze(1) * item_vectors.index_select(0, item_rows), histories.segment, histories.n_users)
        if self.history_embedding is not None:
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=[HISTORY_FEATURE], values=histories.items,
                                                      lengths=histories.lengths.to(torch.int32), weights=weights.detach()
                                                      if self.config.user_pooling == "attention" else weights)
            out = out + self.history_embedding(kjt)[HISTORY_FEATURE]
        if self.user_embedding is not None and user_ids is not None:
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=[USER_ID_FEATURE], values=user_ids[user_ids >= 0],
                                                      lengths=(user_ids >= 0).to(torch.int32))
            out = out + self.user_embedding(kjt)[USER_ID_FEATURE]
        return out
