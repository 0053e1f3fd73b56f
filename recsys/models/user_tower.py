"""The user tower: a user is their history (item ids + the items' content vectors), pooled.

No per-user parameters by default, so the same network embeds a user seen in training, a user
whose history grew since, and a brand-new user: serving passes a live history and gets a vector.

Pooling options: a recency-weighted mean, a learned-query attention, or `self_attention`: the
recency mean plus the readout of causal self-attention blocks over the ordered history
(`SequenceEncoder`, SASRec's design with learned *relative* positions). Relative positions make
the state at every history entry exactly the vector the same tower gives the history ending
there, so the next-item objective (`prefix_states`, every prefix trained on its next item) trains
the very function serving runs on a live history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.models.config import ModelConfig
from recsys.models.graph import FrozenSparse

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
        # the size itself, not int() of it: an export (`recsys.models.onnx_tower`) keeps it a dynamic dimension
        return self.lengths.shape[0]

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
    if torch.onnx.is_in_onnx_export():  # the same maxima as a dense masked max (see `segment_sum`)
        outside = _segment_matrix(segment, n_segments, scores.dtype) == 0
        peak = scores.unsqueeze(0).masked_fill(outside, -torch.inf).amax(dim=1)
    else:
        peak = torch.full((n_segments,), -torch.inf).scatter_reduce(0, segment, scores, reduce="amax", include_self=True)
    e = torch.exp(scores - peak[segment])
    return e / segment_sum(e, segment, n_segments)[segment]


def segment_sum(values: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """(n_segments, *values.shape[1:]): the rows of `values` summed per segment (0 for an empty one).

    While exported to ONNX (`recsys.models.onnx_tower`, request-sized batches only) the same sums are
    a product with the dense (n_segments, n_entries) segment matrix: the exporter's `index_add` keeps
    the number of entries it was traced with, and ONNX Runtime's ScatterElements (`scatter_add`) took
    2 of the 3 ms of a batch of 8 TikTok histories. Eagerly (training's large batches) `index_add`.
    """
    if torch.onnx.is_in_onnx_export():
        return _segment_matrix(segment, n_segments, values.dtype) @ values
    return torch.zeros(n_segments, *values.shape[1:], dtype=values.dtype).index_add(0, segment, values)


# Entries x dim from which the pooling runs as a sparse product (`pooling_matrix`): below it, building the
# matrix (~80 us) costs more than the copies it saves (a served request's few histories: 11 us gathered).
PRODUCT_MIN_VALUES = 1 << 20


def pooling_is_a_product(weights: torch.Tensor, item_vectors: torch.Tensor) -> bool:
    """Whether to pool as a fixed sparse matrix times the item vectors: weights without gradient (the recency
    mean: no learned query), eager (not being exported to ONNX), float32 (scipy's kernel) and large enough."""
    return (not weights.requires_grad and not torch.onnx.is_in_onnx_export()
            and item_vectors.dtype == torch.float32 and weights.dtype == torch.float32
            and weights.shape[0] * item_vectors.shape[1] >= PRODUCT_MIN_VALUES)


def pooling_matrix(histories: UserHistories, weights: torch.Tensor, item_rows: torch.Tensor,
                   n_rows: int) -> FrozenSparse:
    """The pooling as a (n_users, n_rows) sparse matrix P: row u holds user u's entry weights at their item rows.

    Why: gathering every history entry's item vector, weighting and summing it per user materialises an
    (entries x dim) tensor three times per step (gather, product, scatter; and again in backward). On
    Gowalla's whole user base (29,858 histories of up to 50 items, dim 256) that is 600 MB a pass and took
    two thirds of the full step. P @ items is the same sums in the same order (row u's entries in history
    order, and P^T's in user order, as the scatter of the gather's backward adds them), without the copies.
    """
    indptr = np.zeros(histories.n_users + 1, dtype=np.int64)
    np.cumsum(histories.lengths.numpy(), out=indptr[1:])
    matrix = sp.csr_matrix((weights.detach().numpy(), item_rows.numpy(), indptr), shape=(histories.n_users, n_rows))
    return FrozenSparse(matrix)


def _segment_matrix(segment: torch.Tensor, n_segments: int, dtype: torch.dtype) -> torch.Tensor:
    """(n_segments, n_entries) 1 where entry e belongs to segment s, else 0."""
    return (segment.unsqueeze(0) == torch.arange(n_segments).unsqueeze(1)).to(dtype)


@dataclass
class PaddedHistories:
    """The newest `positions` entries of each history on a right-aligned (n_users, positions) grid.

    Attributes:
        flat: (n_entries,) grid cell of each entry (user * positions + slot; slot positions - 1 = newest);
        kept: (n_entries,) float 1 for entries on the grid (age < positions), 0 for older ones;
        filled: (n_users, positions) bool, cells holding an entry.
    """

    flat: torch.Tensor
    kept: torch.Tensor
    filled: torch.Tensor

    @classmethod
    def of(cls, histories: UserHistories, positions: int) -> "PaddedHistories":
        kept = (histories.age < positions).to(torch.float32)
        slot = (positions - 1 - histories.age).clamp(min=0).long()
        flat = histories.segment * positions + slot
        filled = segment_sum(kept, flat, histories.n_users * positions) > 0
        return cls(flat, kept, filled.view(histories.n_users, positions))

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """(n_entries, d) -> (n_users, positions, d), zeros where no entry."""
        n_users, positions = self.filled.shape
        return segment_sum(values * self.kept.unsqueeze(1), self.flat, n_users * positions).view(n_users, positions, -1)


class CausalBlock(nn.Module):
    """Pre-LayerNorm self-attention + point-wise feed-forward, both residual (SASRec's block).

    A query attends to itself and older entries only; the attention logit gets a learned bias per
    distance (0 = itself), the relative position, per head. `heads` split `dim` (SASRec: 2), `inner`
    is the feed-forward's hidden width (0 = dim; SASRec: 4 x dim), `weight_dropout` drops attention
    weights (None = `dropout`). The defaults are the original single-head block, op for op.
    """

    def __init__(self, dim: int, positions: int, dropout: float, heads: int = 1, inner: int = 0,
                 weight_dropout: float | None = None, activation: str = "relu"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention_heads={heads} does not divide dim={dim}")
        self.heads = heads
        inner = inner or dim
        self.norm_attention = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        # one bias per distance; (heads, positions) with several heads (the 1-head shape is the original one)
        self.distance_bias = nn.Parameter(torch.zeros(positions) if heads == 1 else torch.zeros(heads, positions))
        self.norm_feed = nn.LayerNorm(dim)
        self.feed = nn.Sequential(nn.Linear(dim, inner), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(inner, dim))
        self.dropout = nn.Dropout(dropout)
        self.weight_dropout = self.dropout if weight_dropout is None else nn.Dropout(weight_dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm_attention(x)).chunk(3, dim=-1)
        if self.heads == 1:
            logits = q @ k.transpose(1, 2) / float(np.sqrt(x.shape[-1])) + self.distance_bias[distance]
            weights = torch.softmax(logits.masked_fill(~allowed, -torch.inf), dim=-1)
            attended = self.weight_dropout(weights) @ v
        else:  # (n, P, dim) -> (n, heads, P, dim / heads): each head attends on its own slice
            q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
            logits = q @ k.transpose(2, 3) / float(np.sqrt(q.shape[-1])) + self.distance_bias[:, distance]
            weights = torch.softmax(logits.masked_fill(~allowed.unsqueeze(1), -torch.inf), dim=-1)
            attended = (self.weight_dropout(weights) @ v).transpose(1, 2).flatten(2)
        x = x + self.dropout(self.project(attended))
        return x + self.dropout(self.feed(self.norm_feed(x)))


class SequenceEncoder(nn.Module):
    """Causal self-attention over the newest `positions` history items: one state per entry.

    The state of entry e depends on e and the entries before it (and their distances to e) only,
    so it equals the newest state of the history cut after e: a prefix is encoded exactly as
    serving would encode it. The user's vector reads the newest state through `readout`, which
    starts at zero (the tower starts as its recency mean).
    """

    def __init__(self, dim: int, blocks: int, positions: int, dropout: float, heads: int = 1, inner: int = 0,
                 weight_dropout: float | None = None, activation: str = "relu"):
        super().__init__()
        self.positions = positions
        self.blocks = nn.ModuleList([CausalBlock(dim, positions, dropout, heads, inner, weight_dropout, activation)
                                     for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)
        self.readout = nn.Linear(dim, dim)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        self.dropout = nn.Dropout(dropout)
        slots = torch.arange(positions)
        self.register_buffer("distance", (slots[:, None] - slots[None, :]).clamp(min=0), persistent=False)
        self.register_buffer("causal", slots[None, :] <= slots[:, None], persistent=False)

    def states(self, padded: PaddedHistories, entry_vectors: torch.Tensor) -> torch.Tensor:
        """(n_users, grid, dim) read-out states on the grid (0 where no entry).

        The grid may be narrower than `positions` (training batches of short histories: a grid as wide as
        the longest one); every state is the same, since attention is causal and positions are relative.
        """
        width = padded.filled.shape[1]
        causal, distance = self.causal, self.distance
        if width != self.positions:  # never while tracing the served tower (its grid is `positions` wide)
            causal, distance = causal[:width, :width], distance[:width, :width]
        eye = torch.eye(width).to(torch.bool)  # made as float and cast: ONNX's EyeLike has no bool output
        allowed = (causal.unsqueeze(0) & padded.filled.unsqueeze(1)) | eye  # a padded query sees itself: no empty row
        x = self.dropout(padded.grid(entry_vectors))
        for block in self.blocks:
            x = block(x, allowed, distance)
        return self.readout(self.norm(x)) * padded.filled.unsqueeze(-1)


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
        self.sequence = SequenceEncoder(config.dim, config.attention_blocks, config.attention_positions,
                                        config.attention_dropout, config.attention_heads, config.attention_inner,
                                        config.attention_weight_dropout, config.attention_activation) \
            if config.user_pooling == "self_attention" else None
        # the blocks' own input table (`attention_item_embedding`): made only when asked, so the default
        # tower draws the same initial weights as before
        self.sequence_items = nn.Parameter(torch.zeros(n_items, config.dim)) \
            if self.sequence is not None and config.attention_item_embedding else None
        self._states: tuple | None = None  # the last grad-enabled pass's sequence states (see forward)
        self.recency_logit = nn.Parameter(torch.zeros(()))  # attention: learned recency slope

    def sequence_inputs(self, items: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
        """What the self-attention blocks read for history entries `items` whose item vectors are `entries`."""
        return entries if self.sequence_items is None else entries + self.sequence_items.index_select(0, items)

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
        if self.sequence is None and pooling_is_a_product(weights, item_vectors):
            out = pooling_matrix(histories, weights, item_rows, item_vectors.shape[0]) @ item_vectors
        else:
            entries = item_vectors.index_select(0, item_rows)
            out = segment_sum(weights.unsqueeze(1) * entries, histories.segment, histories.n_users)
        if self.sequence is not None:
            padded = PaddedHistories.of(histories, self.sequence.positions)
            states = self.sequence.states(padded, self.sequence_inputs(histories.items, entries))
            # a training step's next-item loss reads every entry's state: keep this pass's (same dropout)
            self._states = (histories, item_vectors, padded, states) if torch.is_grad_enabled() else None
            out = out + states[:, -1]
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

    def prefix_states(self, histories: UserHistories, item_vectors: torch.Tensor) -> torch.Tensor:
        """(n_entries, dim): for each entry e, the layer-0 vector this tower gives the history ending at e.

        The next-item objective's input (every prefix predicts its next item). Exact for histories
        within `attention_positions` (the feature window by default); the recency mean runs over
        the same newest entries. Raises ValueError for poolings without a prefix form.
        """
        if self.config.user_pooling == "attention" or self.history_embedding is not None:
            raise ValueError("the next-item objective needs user_pooling mean or self_attention and "
                             "history_embedding = false")
        longest = int(histories.lengths.max()) if histories.n_users else 1
        positions = min(self.sequence.positions, max(longest, 1)) if self.sequence is not None else max(longest, 1)
        kept = self.__dict__.get("_states")
        reuse = kept is not None and kept[0] is histories and kept[1] is item_vectors
        padded = kept[2] if reuse else PaddedHistories.of(histories, positions)
        positions = padded.filled.shape[1]
        x = padded.grid(item_vectors.index_select(0, histories.items))
        slots = torch.arange(positions)
        distance = (slots[:, None] - slots[None, :]).to(x.dtype)
        h = self.config.recency_half_life
        logit = -distance * (np.log(2.0) / h) if h > 0 else torch.zeros_like(distance)
        allowed = (distance >= 0).unsqueeze(0) & padded.filled.unsqueeze(1)
        weights = torch.softmax(logit.unsqueeze(0).masked_fill(~allowed, -torch.inf), dim=-1).nan_to_num(0.0)
        states = weights @ x
        if self.sequence is not None:
            states = states + (kept[3] if reuse else self.sequence.states(
                padded, self.sequence_inputs(histories.items, item_vectors.index_select(0, histories.items))))
        return states.reshape(-1, states.shape[-1]).index_select(0, padded.flat) * padded.kept.unsqueeze(1)
