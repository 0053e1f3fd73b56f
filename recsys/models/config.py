"""Hyperparameters of the two-tower model and its objective, as typed, validated configs.

They live with the model (not with the training job) because a run directory must be able to
rebuild the exact network from `config.toml` alone: serving loads the same `ModelConfig`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FusionKind = Literal["weighted", "concat_mlp", "gated_attention"]
PoolingKind = Literal["mean", "attention", "self_attention"]
LossKind = Literal["softmax", "full_softmax", "bpr"]
StepKind = Literal["auto", "full", "sampled", "sequence"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """Shape of the towers. Defaults are the plain two-tower; `configs/<dataset>.toml` holds tuned values."""

    dim: int = Field(64, ge=2, description="Shared item/user space dimension.")
    fusion: FusionKind = Field("weighted", description="How per-medium projections become one content vector.")
    projection_hidden: int = Field(0, ge=0, description="Hidden width of each medium's projection MLP (0 = linear).")
    id_embedding: bool = Field(True, description="Add a learned item-ID embedding (warm items only).")
    id_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Share of warm items served content-only per step.")
    content_mode: Literal["add", "fallback", "gated"] = Field(
        "add", description=(
            "add: item = ID + content; fallback: content only where the ID is missing or dropped; gated: "
            "ID + g·(content direction at the warm ID rows' mean length) with a learned scalar g (init "
            "`content_gate_init`), content alone (at `content_scale`) where the ID is missing or dropped."))
    content_scale: Literal["raw", "id"] = Field(
        "raw", description=(
            "Length of the content vector where it enters an item's layer-0 vector. raw: the projection's own "
            "(a linear map of 128 standardised features: ~6.5 at init, ~8.5 after one TikTok epoch, against "
            "~1.6 -> ~0.4 for the ID rows); id: its direction at the mean length of the warm ID rows "
            "(no gradient through that length), so content-served items sit on the ID rows' scale."))
    content_gate_init: float = Field(0.0, description="gated content_mode: initial value of the learned gate g.")
    id_init_std: float = Field(0.1, gt=0.0)
    feature_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on raw content features.")
    propagation_layers: int = Field(2, ge=0, description="LightGCN layers over the user-item train graph.")
    edge_dropout: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "Share of the user-item graph's edges each full training step propagates without (renormalised over the "
        "edges kept; DropEdge / SGL's edge dropout). Evaluation and serving use the whole train graph."))
    edge_dropout_mode: Literal["uniform", "degree"] = Field("uniform", description=(
        "edge_dropout: which edges go. uniform: each alike; degree: FREEDOM's degree-sensitive pruning, an edge "
        "kept with odds 1/sqrt(deg(user)·deg(item)), so edges between heavy users and popular items go first."))
    layer0_weight: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Weight of layer 0 in the propagated vector, the layers 1..L sharing the rest equally (LightGCN++'s gamma); "
        "None = LightGCN's mean over layers 0..L."))
    graph_self_exponent: float = Field(0.5, ge=0.0, le=1.0, description=(
        "A node's sum over its graph neighbours is divided by its own degree to this power (LightGCN++'s alpha; "
        "LightGCN's symmetric normalisation is 1/2). A served history divides by its length to this power."))
    graph_neighbour_exponent: float = Field(0.5, ge=-0.5, le=1.0, description=(
        "Each neighbour in that sum is divided by its degree to this power (LightGCN++'s beta; LightGCN 1/2; "
        "below 1/2 a popular neighbour weighs more)."))
    graph_unit_layers: bool = Field(False, description=(
        "Scale each propagation layer's vectors to unit length before they are summed into the next (LightGCN++), "
        "so a neighbour weighs what the graph says and not also its vector's length."))
    item_knn: int = Field(0, ge=0, description="Neighbours per item in the frozen content kNN graph (0 = off).")
    item_knn_weight: float = Field(1.0, ge=0.0, description="Weight of the kNN-smoothed item vector.")
    item_knn_space: Literal["raw", "standardised"] = Field("raw", description=(
        "Features the kNN graph's cosines are taken on: raw encoder outputs, or each medium z-scored over "
        "the items that have it (as the projections see it): TikTok's image vectors share a mean of length "
        "30.6 out of 33.1, so their raw cosines average .86 and rank neighbours largely by that common part."))
    user_pooling: PoolingKind = Field("mean", description=(
        "How the user tower pools history content vectors: mean (recency-weighted by `recency_half_life`), "
        "attention (learned query), or self_attention (the recency mean plus a causal self-attention readout "
        "over the ordered history, SASRec-like; see `SequenceEncoder`)."))
    attention_blocks: int = Field(2, ge=1, description="self_attention pooling: causal self-attention blocks.")
    attention_positions: int = Field(50, ge=1, description=(
        "self_attention pooling: newest history items it attends to, each distance with a learned bias."))
    attention_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="self_attention pooling: dropout while training.")
    attention_heads: int = Field(1, ge=1, description=(
        "self_attention pooling: attention heads per block (must divide dim); each head has its own distance bias."))
    attention_inner: int = Field(0, ge=0, description=(
        "self_attention pooling: inner width of each block's feed-forward (0 = dim; SASRec uses 4 x dim)."))
    attention_weight_dropout: float | None = Field(None, ge=0.0, lt=1.0, description=(
        "self_attention pooling: dropout on the attention weights (None = attention_dropout)."))
    attention_activation: Literal["relu", "gelu"] = Field(
        "relu", description="self_attention pooling: the feed-forward's activation (SASRec: gelu).")
    attention_item_embedding: bool = Field(False, description=(
        "self_attention pooling: the blocks read the item tower's vectors plus a learned per-item input "
        "embedding of their own (zero at the start), so what an item means as history can move apart from "
        "how it is scored; the recency mean and the scoring side keep the item tower's vectors."))
    recency_half_life: float = Field(0.0, ge=0.0, description="History half-life in events (0 = no recency decay).")
    history_embedding: bool = Field(True, description="User tower adds its own history-item EmbeddingBag.")
    user_id_embedding: bool = Field(False, description="Per-user ID row (off: users are their history, so unseen users work).")
    popularity_prior: bool = Field(True, description="Extra unit-norm coordinate carrying a learned popularity prior.")
    cold_item_prior: float = Field(0.0, ge=0.0, description=(
        "New-item prior: train count the popularity prior assumes for items with none (0 = their count, 0)."))
    temperature: float = Field(0.1, gt=0.0, description="Initial softmax temperature of the cosine scores.")
    learn_temperature: bool = True

    @field_validator("user_id_embedding")
    @classmethod
    def _no_user_ids(cls, value: bool) -> bool:
        # The trainer never feeds user ids and the serving encoder builds users from histories,
        # so a user-ID table would be silently untrained: refuse it instead.
        if value:
            raise ValueError("user_id_embedding=true is not supported: users are their history "
                             "(so serving embeds users it never saw); leave it false")
        return value


class LossConfig(_Strict):
    """The training objective: retrieval loss plus optional cross-media alignment."""

    kind: LossKind = "softmax"
    next_item: bool = Field(False, description=(
        "Next-item objective: a train pair whose item has a predecessor in the user's history window trains the "
        "user vector of the history *before* it (every prefix, as SASRec), not the whole window's vector; "
        "older pairs keep the whole-window vector. Needs mean or self_attention pooling without history_embedding."))
    logq_correction: float = Field(1.0, ge=0.0, description="Multiplier of the log sampling-probability correction.")
    uniform_negatives: int = Field(0, ge=0, description="Extra uniformly sampled negatives per batch (mixed negatives).")
    reverse_weight: float = Field(0.0, ge=0.0, description=(
        "Sampled softmax: weight of the reverse direction, each batch positive picking its own user among the "
        "batch's users (CLIP's symmetric in-batch loss). It trains the user side to tell users apart, not only to "
        "point at popular items; the item's logQ is constant along that softmax, so it needs no correction. 0: off."))
    softmax_group: int = Field(0, ge=0, description=(
        "Sampled softmax on the full step: split the batch into groups of this many rows, each its own in-batch "
        "softmax (its own candidates and logQ), their losses averaged. One whole-graph propagation then carries "
        "a large batch while the (rows x candidates) logits stay the size of one group: on a large graph the "
        "propagation, not the batch, is what a step costs. 0: the whole batch is one softmax."))
    content_weight: float = Field(0.0, ge=0.0, description=(
        "Weight of the retrieval loss scored against content-only item vectors: trains the cold-start path "
        "on every warm item, not only the ID-dropped ones."))
    alignment_weight: float = Field(0.0, ge=0.0, description="Weight of the image<->audio(<->text) InfoNCE.")
    alignment_temperature: float = Field(0.2, gt=0.0)
    alignment_batch: int = Field(1024, ge=2, description="Items per alignment step (train items only).")
    view_contrast_weight: float = Field(0.0, ge=0.0, description=(
        "Sequence step: weight of a contrastive term between two passes of the user tower over the same "
        "prefixes (two dropout masks; DuoRec's model-level augmentation): each prefix vector must pick out "
        "its own second view among the batch's, prefixes with the same next item not counted as negatives. "
        "Regularises the self-attention tower, which over-fits the train transitions; 0: off."))
    view_contrast_temperature: float = Field(0.1, gt=0.0, description="Temperature of that term (unit vectors).")
    target_horizon: int = Field(1, ge=1, description=(
        "Sequence step with kind=full_softmax: each prefix is trained on the next `target_horizon` train items, "
        "not the next one alone (PinnerFormer's dense all-action loss over a short horizon), item j after the "
        "prefix weighted `horizon_decay ** j`, each prefix's weights summing to 1. 1: the next item only."))
    horizon_decay: float = Field(0.5, gt=0.0, le=1.0, description="Weight ratio of each later item to the one before it.")
    step: StepKind = Field("auto", description=(
        "full: every step encodes and propagates the whole catalogue (exact graph gradients; what the TikTok "
        "and ML-100K figures use); sampled: a step encodes only the items it needs (positives, negatives, "
        "the batch users' history windows, a fan-out of graph neighbours), so its cost grows with the batch, "
        "not the catalogue; auto: full up to `recsys.models.task.AUTO_FULL_MAX_ITEMS` items, else sampled; "
        "sequence: next-item training on users' sequences (SASRec's unit): a step takes windows of consecutive "
        "train items (`train.batch_size` counts their targets), and every history entry's prefix vector, as the "
        "served tower computes it, is trained on the item that follows it, against the whole catalogue "
        "(kind=full_softmax) or in-batch (kind=softmax, logQ-corrected); needs propagation_layers = 0, "
        "user_pooling mean or self_attention and history_embedding = false."))
    fanout: int = Field(16, ge=1, description=(
        "Sampled step: graph neighbours (items) drawn per batch user to correct its cached propagation term "
        "(all of them below that degree)."))
    item_fanout: int = Field(0, ge=0, description=(
        "Sampled step: users drawn per candidate item whose layer-0 vectors are recomputed from their history "
        "windows to correct the item's cached propagation term, with gradients (costs item_fanout x window per "
        "candidate); 0: the item's cached term as it is."))

    @model_validator(mode="after")
    def _sampled_needs_sampled_loss(self) -> "LossConfig":
        if self.step == "sampled" and self.kind == "full_softmax":
            raise ValueError("loss.step=sampled cannot score the whole catalogue (kind=full_softmax); "
                             "use kind=softmax or step=full")
        if self.target_horizon > 1 and (self.step != "sequence" or self.kind != "full_softmax"):
            raise ValueError("loss.target_horizon > 1 needs loss.step=sequence and loss.kind=full_softmax")
        if self.softmax_group and self.kind != "softmax":
            raise ValueError("loss.softmax_group splits the in-batch softmax: it needs loss.kind=softmax")
        if self.reverse_weight > 0 and self.kind != "softmax":
            raise ValueError("loss.reverse_weight is the in-batch softmax's reverse direction: it needs loss.kind=softmax")
        if self.step == "sequence" and self.kind == "bpr":
            raise ValueError("loss.step=sequence trains with a softmax: use kind=full_softmax or kind=softmax")
        return self
