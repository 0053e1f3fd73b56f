"""The built-in default recipe: a robust config for a dataset nobody wrote a config for.

Why: the untuned pydantic defaults (dim 64, lr 5e-3, no weight decay, no schedule) are a
*plain* model, not a recipe; on an unseen Amazon dataset they peaked at epoch 1 and ended below
MostPopular. A new dataset must instead get settings that are safe across data shapes and are
chosen from the data itself:
- optimisation that does not overshoot: Adam at lr .01 (what both hand-tuned configs use) with a
  one-epoch linear warm-up and a cosine decay, L2 weight decay, and the epoch chosen on `valid`
  with patience, so a recipe that over-fits stops at its best epoch instead of its last;
- the settings both hand-tuned configs (TikTok and ML-100K, two very different datasets) agree
  on: temperature 0.1, popularity coordinate, ID dropout 0.1 with content as the fallback;
- two regimes by density, each anchored by a measurement: sparse data (TikTok, Amazon reviews:
  density ~.001) gets the TikTok-tuned choices (sampled softmax with logQ x3, 2 propagation
  layers, weight decay 1e-3); dense data (ML-100K-like, > .01) gets what won on `valid` of a
  dataset no config was tuned for (3 layers as LightGCN, weight decay 5e-3: at 1e-3 every
  dense run peaked by epoch 5 and fell; sweep in BENCHMARKS.md "Two-tower training");
- dense regime, **mixed members**: even members train with the sampled softmax + logQ x3 (as the
  sparse regime), odd members with the exact softmax over the catalogue (while it stays cheap).
  The exact softmax alone was the dense choice until it met data just over the threshold: on
  ML-100K thinned to 40 % (density .022) its towers scored valid NDCG@20 .065-.081 against .089-.102
  for the sampled softmax, and on the full random split (.05) the two kinds were close but mixing
  them gave the best three-member ensemble (BENCHMARKS.md "Dense regime: two kinds of members");
- sparse regime, measured on two unseen sparse derivations (BENCHMARKS.md issue 16, "Generalisation
  on three unseen datasets"): a **fixed temperature** (0.1). The learned one drifts down as the
  popularity prior's slope does (the TikTok sweep), and with it the scores lose their prior; fixed,
  one tower's valid NDCG@20 rose on every seed: thinned ML-100K .0649/.0628/.0599 vs
  .0622/.0596/.0576 (seeds 0-2), TikTok re-split at random .0620/.0620/.0620 vs .0566/.0566/.0574;
  as the served three-member ensemble .0684 vs .0662 and .0631 vs .0589 (the learned temperature
  left the TikTok-shaped default *below MostPopular*, .0590; 5,744 users, one figure's SE ~.0023).
  On dense data the fixed temperature lost (.2529 vs .2587), so only the sparse regime takes it.
  Sparse levers measured and *not* kept (means of seeds 0-1, valid NDCG@20, thinned ML-100K):
  logQ x1 .0435 and x2 .0564 vs x3 .0609 (the over-correction is what lifts popular items; MostPopular
  is strong on sparse data), exact softmax .0450, 3 layers .0592, lr .003 .0574, wd 5e-3 .0612
  (tie), dim 32 / 128 with the fixed temperature .0605 / .0638 vs .0639. Judged as the served
  three-member ensemble (seeds 0-2), neither logQ x4 (.0682; its single towers won on all three
  seeds) nor dim 128 (.0643) nor five members (.0661) beat the kept setting's .0684;
- dense regime: the user tower's **history window covers every user's whole train history**
  (`window_for`: the 99th percentile of train events per user, rounded up to a power of two,
  50-1024). With the serving default of 50 events, 51 % of the unseen ML-100K derivation's users
  (random split, median 52 train events, 99th percentile 358) were cut to their last 50, a recency
  cut that a random split does not reward: one tower's valid NDCG@20 .2587 (window 50) vs .2729 (512),
  seed 0; the three-member recipe .2817 vs .2952 (LightGCN .2921: the window decides whether the
  default ties LightGCN or loses to it on dense data).
  A run records its window; serving it needs an online store materialised with the same cap
  (`RECSYS_ONLINE_HISTORY_CAP`, checked at start-up). Sparse data keeps the default (1 % of
  the sparse derivations' users have more than 50 train events), and so does the next-item regime;
- a next-item task (no split column, real timestamps: leave-last-out) is its own regime
  (`sequence_regime`): SASRec's recipe on the two-tower's own user tower, trained by the sequence
  step (every history prefix, exactly as the served tower encodes it, on its next item; full
  softmax; causal self-attention pooling; no graph; lr 2e-3 constant, no weight decay, epoch on
  valid with patience 20). It replaced recency pooling + the pair objective, which only tied
  MostPopular on sparse next-item data (BENCHMARKS.md "Next-item regime"). Beyond
  `FULL_SOFTMAX_ITEMS` items the old pair regime stays (recency pooling, one layer, sampled softmax);
- wherever the sampled softmax trains (sparse, dense, a next-item catalogue past the full softmax), **valid
  decides the logQ strength** (`LOGQ_PILOT`, through `train.pilot`): one tower at x3 (the over-correction that
  lifts popular items, which TikTok and the thinned ML-100K want) and one at x1 (the textbook correction),
  the better on valid applies to every member and is member 0. Last.fm, where popularity explains little,
  wanted x1 by 20 % of valid NDCG@20, and at x3 the recipe ranked below ItemKNN and LightGCN there. Of the
  statistics the recipe reads, only its 4.2 train events per item set it apart from the seven sets that want
  x3 (7.3 or more), one data set on that side of any threshold: too little for a rule, so one tower lets
  valid decide. Both candidates train 3 epochs and only the leader trains on (`train.pilot_epochs`): on the
  seven sets where both were trained out, the epoch-3 leader was the final winner every time;
- the embedding dimension from the catalogue size (`dimension_for`), in the dense regime at most the
  train events per item (`dense_dimension`);
- the number of ensemble members from a CPU time budget (`members_for`).

A `<folder>.toml` beside the dataset, or `configs/<dataset>.toml`, replaces the recipe
(`training.config.config_source`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recsys.data.schema import Dataset
from recsys.models.task import AUTO_FULL_MAX_ITEMS

# The sampled softmax's logQ strength, one tower each, valid decides (`train.pilot`): x3 over-corrects the
# in-batch sampling towards popular items, which won on TikTok (valid NDCG@20 .0445 vs .0271 at x1) and the
# thinned ML-100K (.0609 vs .0435); on Last.fm, where MostPopular is weak (.077 against ItemKNN's .203),
# x1 won (.2275 vs .1892 at x3, .2092 at x2) and x3 left the recipe below ItemKNN and LightGCN
# (BENCHMARKS.md, "Last.fm: a public dataset from another domain").
LOGQ_PILOT: list[dict[str, Any]] = [{}, {"loss.logq_correction": 1.0}]
# Seconds of training the default recipe may plan for on a 2-core CPU (all members together).
TRAIN_BUDGET_SECONDS = 900.0
# Measured here (BENCHMARKS.md "Two-tower training"): train pairs per second per tower at dim 64,
# one process; an epoch also pays one full-ranking valid evaluation, counted as 30% more.
PAIRS_PER_SECOND_DIM64 = 12_000.0
EXPECTED_EPOCHS = 12
# Above this density (train events / (users x items)) the data is in the "dense" regime measured on
# the unseen ML-100K-derived dataset (BENCHMARKS.md); below it, the sparse regime tuned on TikTok.
DENSE = 0.01
# Exact softmax over the catalogue while the (batch x items) score matrix stays cheap on a CPU.
FULL_SOFTMAX_ITEMS = 50_000
# Dense regime: the user tower's history window covers the 99th percentile of users' train
# histories (rounded up to a power of two), within these bounds.
DENSE_WINDOW_MAX = 1024
# The full step propagates the whole graph once per batch, so an epoch's graph work is
# (train pairs / batch) x train pairs x dim x layers: it grows with the square of the data. Past this work
# the batch doubles (fewer, larger steps) until it fits or reaches BATCH_MAX (BENCHMARKS.md "Gowalla").
BATCH = 2048
BATCH_MAX = 16_384
FULL_STEP_WORK_PER_EPOCH = 5e10
# The next-item regime's sequence step (`sequence_regime`): an epoch cap (the epoch is chosen on valid),
# the epochs a member typically runs (best epoch + patience) and its training speed in next-item targets
# per second per tower at dim 64 on one thread (BENCHMARKS.md "Next-item regime").
SEQUENCE_EPOCHS = 200
SEQUENCE_EXPECTED_EPOCHS = 60
SEQUENCE_TARGETS_PER_SECOND_DIM64 = 5_000.0


@dataclass(frozen=True)
class DataShape:
    """What the recipe reads from a dataset (train part of its default split)."""

    n_users: int
    n_items: int
    n_train_pairs: int
    has_split: bool
    has_media: bool
    real_timestamps: bool
    history_p99: int = 0  # 99th percentile of train events per user (0 = unknown)

    @property
    def density(self) -> float:
        return self.n_train_pairs / max(self.n_users * self.n_items, 1)

    @property
    def pairs_per_item(self) -> float:
        return self.n_train_pairs / max(self.n_items, 1)


def data_shape(dataset: Dataset) -> DataShape:
    """Sizes of `dataset` as the default split will see it (predefined split if any, else 80% of events)."""
    inter = dataset.interactions
    has_split = "split" in inter.columns
    n_train = int((inter["split"] == "train").sum()) if has_split else int(inter.height * 0.8)
    train = inter.filter(inter["split"] == "train") if has_split else inter
    per_user = train.group_by("user_index").len()["len"]
    p99 = int(math.ceil((per_user.quantile(0.99) or 0) * (1.0 if has_split else 0.8))) if per_user.len() else 0
    return DataShape(dataset.n_users, dataset.n_items, n_train, has_split, bool(dataset.item_features or
                     any(m.any() for m in dataset.feature_mask.values())), not dataset.timestamps_synthetic, p99)


def window_for(shape: DataShape, default: int) -> int:
    """Dense regime: a history window over (nearly) every user's whole train history.

    A power of two >= the 99th percentile of train events per user, in [default, 1024]; `default`
    (RECSYS_ONLINE_HISTORY_CAP, 50) when the percentile is unknown or smaller.
    """
    if shape.history_p99 <= default:
        return default
    return int(min(DENSE_WINDOW_MAX, 2 ** math.ceil(math.log2(shape.history_p99))))


def dimension_for(shape: DataShape) -> int:
    """Power of two near 1.5 x sqrt(items), in [32, 256]; halved when items average < 5 train events.

    ML-100K (1,682 items) -> 64, TikTok / Amazon Baby (~7k items) -> 128, 20k+ items -> 256: a
    catalogue's rank grows roughly with the square root of its size, and rows with almost no
    events cannot fill wide vectors (they only add noise for weight decay to fight).
    """
    target = 1.5 * math.sqrt(max(shape.n_items, 1))
    dim = 2 ** round(math.log2(max(target, 1.0)))
    if shape.pairs_per_item < 5:
        dim //= 2
    return int(min(256, max(32, dim)))


def dense_dimension(shape: DataShape, dim: int) -> int:
    """Dense regime: at most the power of two nearest the train events per item (16 at least).

    Why: just over the density threshold the dense regime's towers over-fit within 3 epochs at
    `dimension_for`'s width. On ML-100K thinned to 40 % (1,554 items, 21 train events per item)
    one tower's valid NDCG@20 was .094 at dim 64, .100 at 32 and .113 at 16 (means of seeds 0-2),
    while the full random split (48 events per item) keeps 64 (.282 vs .275 at 32). Events per
    item bound how many coordinates of an item vector the data can pin down.
    """
    events = 2 ** round(math.log2(max(shape.pairs_per_item, 1.0)))
    return int(max(16, min(dim, events)))


def batch_for(shape: DataShape, dim: int, layers: int) -> int:
    """The full step's batch: 2,048, doubled while one epoch's whole-graph propagations exceed
    `FULL_STEP_WORK_PER_EPOCH` (at most `BATCH_MAX`).

    Why: a full step propagates and normalises every user and item vector whatever its batch, so an epoch costs
    its number of steps times the graph; with the batch split into in-batch softmaxes of 2,048
    (`loss.softmax_group`, set with it) the step's cost stays nearly flat in the batch. On Gowalla (719k train pairs, dim 256, 2 layers) batch 2,048 meant 351 whole-graph steps an
    epoch and a ~3.5 h run on one core. Every dataset measured before it (ML-1M, Amazon-Sports, CiteULike,
    TikTok, Amazon-Baby, Last.fm, ML-100K) stays under the limit, so its figures stand.
    """
    if shape.n_items > AUTO_FULL_MAX_ITEMS:  # the sampled step: its cost grows with the batch, not the graph
        return BATCH
    batch = BATCH
    work = shape.n_train_pairs / batch * shape.n_train_pairs * dim * max(layers, 1)
    while work > FULL_STEP_WORK_PER_EPOCH and batch < BATCH_MAX:
        batch *= 2
        work /= 2
    return batch


def members_for(shape: DataShape, dim: int, budget_seconds: float = TRAIN_BUDGET_SECONDS) -> int:
    """Seeded towers (1-3) that fit the CPU budget: more members remove seed noise, each costs a training."""
    rate = PAIRS_PER_SECOND_DIM64 * 64 / max(dim, 64)
    member_seconds = shape.n_train_pairs * EXPECTED_EPOCHS * 1.3 / rate
    return int(max(1, min(3, budget_seconds // max(member_seconds, 1.0))))


def robust_recipe(shape: DataShape) -> dict[str, Any]:
    """The default config for data of this shape, as a raw TOML-shaped dict (validated by `TrainConfig`)."""
    dim = dimension_for(shape)
    next_item = not shape.has_split and shape.real_timestamps
    split = "predefined" if shape.has_split else "leave-last-out"
    dense = shape.density > DENSE and not next_item
    if dense:
        dim = dense_dimension(shape, dim)
    sparse = not dense and not next_item
    raw: dict[str, Any] = {
        "data": {"split": split},
        "model": {
            "dim": dim, "fusion": "weighted", "content_mode": "fallback", "id_embedding": True, "id_dropout": 0.1,
            "propagation_layers": 3 if dense else (1 if next_item else 2),
            "item_knn": 10 if shape.has_media else 0, "user_pooling": "mean",
            "recency_half_life": 3.0 if next_item else 0.0, "history_embedding": False,
            "temperature": 0.1, "popularity_prior": True,
            # Sparse, not next-item: a fixed temperature (see the module docstring for the measurement).
            "learn_temperature": not sparse,
        },
        "loss": {"kind": "softmax",
                 "logq_correction": 3.0, "uniform_negatives": 0,
                 "alignment_weight": 1.0 if shape.has_media else 0.0},
        # (the next-item regime's sequence step counts targets, not pairs, and propagates no graph: not scaled)
        "train": {"epochs": 20, "batch_size": BATCH if next_item else batch_for(shape, dim, 3 if dense else 2), "lr": 1e-2, "lr_schedule": "cosine", "warmup_epochs": 1.0,
                  "weight_decay": 5e-3 if dense else 1e-3, "patience": 5,
                  "select_metric": "ndcg@10" if next_item else "ndcg@20",
                  "ensemble": members_for(shape, dim),
                  # The sampled softmax's logQ strength, decided on valid by one extra tower (`train.pilot`) that
                  # trains `train.pilot_epochs` (3) epochs: only the leader then trains on.
                  "pilot": [dict(entry) for entry in LOGQ_PILOT]},
        # The closed-form EASE member (training.closed_form), kept at the weight valid chooses, 0 included:
        # valid N@20 +3 % on ml100k-random, +7 % on Amazon-Baby, lower at any weight on TikTok ("EASE").
        # Its item part's form too: unit rows, or EASE's column lengths kept ("The closed-form member's item form").
        # Where the grid's largest weight wins, valid doubles it up to 3 times (ML-1M: 2, "ML-1M").
        # GF-CF competes with EASE as that member (valid chooses the kind), and alone past EASE's catalogue limit:
        # on Gowalla (41k items) the GF-CF baseline is ahead of the trained towers ("GF-CF").
        "ease": {"weights": [0.0, 0.25, 0.5, 1.0], "item_forms": ["unit", "lengths"], "extend_weights": 3,
                 "kinds": ["ease", "gf-cf"]},
    }
    if raw["train"]["batch_size"] > BATCH:  # one propagation, several softmaxes of the usual size
        raw["loss"]["softmax_group"] = BATCH
    if dense:
        from recsys.config import get_settings

        raw["data"]["feature_window"] = window_for(shape, get_settings().online_history_cap)
        if shape.n_items <= FULL_SOFTMAX_ITEMS:  # odd members: the exact softmax, a different kind of tower
            exact = {"loss.kind": "full_softmax", **({"loss.softmax_group": 0} if "softmax_group" in raw["loss"] else {})}
            raw["train"]["member_overrides"] = [{}, exact]
    if next_item and shape.n_items <= FULL_SOFTMAX_ITEMS:
        sequence_regime(raw, shape, dim)
    return raw


def sequence_regime(raw: dict[str, Any], shape: DataShape, dim: int) -> None:
    """The next-item regime (leave-last-out) on a catalogue the full softmax can score: SASRec's recipe
    on the two-tower's own user tower (in place on `raw`).

    The sequence step (`loss.step = "sequence"`): windows of each user's train sequence, and every
    history prefix's vector, exactly as the served tower computes it from that prefix, trained on
    the item that follows it with a full softmax over the catalogue; causal self-attention pooling
    (2 blocks, dropout .2), no graph (a prefix's vector must not read later events through the
    graph), Adam at a constant lr without weight decay, and the epoch chosen on valid with a
    patience long enough for the slow start of self-attention training (valid often stalls for
    10 epochs before the attention takes over). Measured in BENCHMARKS.md ("Next-item regime").
    """
    raw["model"].update({"propagation_layers": 0, "user_pooling": "self_attention", "attention_blocks": 2,
                         "attention_dropout": 0.2})
    raw["loss"].update({"kind": "full_softmax", "step": "sequence", "logq_correction": 0.0})
    raw["train"].update({"epochs": SEQUENCE_EPOCHS, "lr": 2e-3, "lr_schedule": "constant", "warmup_epochs": 0.0,
                         "weight_decay": 0.0, "patience": 20, "ensemble": sequence_members_for(shape, dim),
                         "pilot": []})  # the full softmax has no logQ to decide
    # the closed-form member's history sum may weight recent items more (valid chooses; ML-100K chose 10)
    raw["ease"]["half_lives"] = [0.0, 3.0, 10.0, 30.0]


def sequence_members_for(shape: DataShape, dim: int, budget_seconds: float = TRAIN_BUDGET_SECONDS) -> int:
    """`members_for` for the sequence step: its cost is train transitions x epochs (one causal pass per window)."""
    rate = SEQUENCE_TARGETS_PER_SECOND_DIM64 * 64 / max(dim, 64)
    member_seconds = max(shape.n_train_pairs - shape.n_users, 1) * SEQUENCE_EXPECTED_EPOCHS * 1.3 / rate
    return int(max(1, min(3, budget_seconds // max(member_seconds, 1.0))))


def describe(shape: DataShape) -> str:
    """One line for the log and the run's config: what the recipe saw."""
    return (f"{shape.n_users} users, {shape.n_items} items, {shape.n_train_pairs} train events, density "
            f"{shape.density:.4f}, {'media' if shape.has_media else 'no media'}, "
            f"{'predefined split' if shape.has_split else 'leave-last-out'}")
