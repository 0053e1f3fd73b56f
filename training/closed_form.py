"""Fit the closed-form members after the towers and keep each only where valid says it helps.

Two kinds, each a fixed item-item matrix B served as a history table and an item table
(`recsys.models.closed_form`):
- **EASE** (`recsys.baselines.ease`): the basket regressed on itself, order ignored. Measured before it was
  built (`benchmarks/ease_mix.py --rank K --unit`, BENCHMARKS.md "EASE"): weight .5 lifted valid and test N@20
  on dense ml100k-random (+3 %) and Amazon-Baby (+8 %) and lowered TikTok's valid at any weight.
- **SLIT** (`recsys.baselines.slit`): the next item regressed on the recency-weighted items before it, only on
  a time-ordered split (leave-last-out, temporal); elsewhere the train order says nothing about "next".
  Its item part keeps B's column lengths (`item_part(keep_norms=True)`): on ML-100K valid, unit item rows
  cost a third of its NDCG@10 at rank 256 (.1082 vs .1257), the lengths almost nothing.

Steps (every rank fits the same, deterministically; rank 0 scores valid and shares the scores), per kind in
that order, on top of the towers and the members kept before it:
1. the model on the train interactions, its strength (and SLIT's half-life) chosen on valid by the
   baseline's own code (`EASE.fit_matrix`, `SLIT.fit_sequences`);
2. its weights factored at its rank (`recsys.models.closed_form`);
3. each candidate (weight alpha, and EASE's recency half-life of `ease.half_lives`) scored on valid with the
   served vectors: the member's part enters the concatenation with scale sqrt(alpha x sum_k 1/T_k), i.e.
   score = towers' average logit + alpha x the member's score; the best candidate (ties: the smaller weight
   and half-life) is kept if it beats what was kept before by more than `ease.min_gain_se` paired SE.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.baselines.base import interaction_matrix, user_sequences
from recsys.baselines.ease import EASE
from recsys.baselines.slit import SLIT
from recsys.data.splits import TIME_ORDERED, known_before
from recsys.metrics import per_user_ranking_metrics
from recsys.models.closed_form import HistoryTableTower, factor_weights, item_part
from recsys.models.content_projection import closed_form_content_payload
from recsys.models.ensemble import concat_members
from recsys.models.user_encoder import history_tensors
from training.config import TrainConfig
from training.data import TrainingData
from training.distributed import DistContext, broadcast
from training.export import served_scorer

log = logging.getLogger(__name__)


@dataclass
class ClosedFormMember:
    """The fitted member as the run's export reads any member: vectors, served payload, content part."""

    kind: str                  # "ease" or "slit"
    module: HistoryTableTower
    users: np.ndarray          # (n_users, rank + 1): the served part of every user's train window
    items: np.ndarray          # (n_items, rank + 1)
    lam: float
    weight: float              # alpha: relative to the towers' average logit
    half_life: float           # recency weighting of the history sum (0 = none)
    temperature: float         # 1 / (alpha x sum_k 1/T_k): its scale in the concatenation is 1/sqrt(T)
    valid_by_weight: dict[str, float] = field(default_factory=dict)  # "weight" or "weight@half-life" -> valid
    seconds: float = 0.0
    gain_se: float = 0.0       # the best candidate's valid gain over what was kept before, in paired standard errors
    best_candidate: str = ""
    valid_per_user: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # the kept candidate's

    def user_vectors(self) -> np.ndarray:
        return self.users

    def item_vectors(self) -> np.ndarray:
        return self.items

    def encoder_payload(self) -> dict[str, Any]:
        return self.module.payload()

    def projection_payload(self) -> dict[str, Any]:
        return closed_form_content_payload(self.module.output_dim)

    def media_vectors(self, data: TrainingData) -> dict[str, np.ndarray]:
        """Per medium: zeros (the member reads no content)."""
        return {m: np.zeros((data.n_items, self.module.output_dim), np.float32) for m in data.catalog.media}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "lambda": self.lam, "rank": self.module.rank, "weight": self.weight,
                "half_life": self.half_life, "valid_by_weight": self.valid_by_weight,
                "best_candidate": self.best_candidate, "gain_se": round(self.gain_se, 2),
                "seconds": round(self.seconds, 1)}


def encode_histories(module: HistoryTableTower, histories: list[list[int]], batch: int = 4096) -> np.ndarray:
    import torch  # noqa: PLC0415

    parts = []
    with torch.inference_mode():
        for start in range(0, len(histories), batch):
            parts.append(module(*history_tensors(histories[start:start + batch])).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, module.output_dim), np.float32)


def valid_per_user(data: TrainingData, users: np.ndarray, items: np.ndarray, metric: str,
                   ctx: DistContext) -> np.ndarray:
    """`metric` per valid user of the served scores (the harness's `evaluate_vectors` on valid, per user): rank 0
    computes, every rank receives it."""
    values = None
    if ctx.is_main:
        known = known_before(data.dataset, "valid", data.split_strategy)
        # the harness's cut-offs (10, 20): top-k breaks exact ties by k, so another k could move tied items
        frame, _ = per_user_ranking_metrics(served_scorer(data, users, items), data.valid, known, data.n_items,
                                            ks=(10, 20))
        values = frame.sort("user_index")[metric].to_numpy()
    return broadcast(values, ctx)


def paired_gain_se(candidate: np.ndarray, base: np.ndarray) -> float:
    """Mean per-user gain of `candidate` over `base` in units of its standard error (0 without any spread: no
    evidence either way)."""
    diff = np.asarray(candidate, np.float64) - np.asarray(base, np.float64)
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return float(diff.mean() / se) if se > 0 else 0.0


@dataclass
class FittedKind:
    """One kind's fitted matrix, ready to be tried at each weight: the served modules by recency half-life."""

    kind: str
    lam: float
    modules: dict[float, HistoryTableTower]
    items: np.ndarray


def fit_ease(config: TrainConfig, data: TrainingData) -> FittedKind:
    """EASE on the train interactions (lambda on valid), factored at `ease.rank`; one module per half-life."""
    settings = config.ease
    x = interaction_matrix(data.train, data.n_users, data.n_items)
    ease = EASE(lambdas=tuple(settings.lambdas)).fit_matrix(x, data.valid, data.train, metric=config.train.select_metric)
    history, items = factor_weights(ease.weights, settings.rank or config.model.dim, seed=config.train.seed)
    modules = {h: HistoryTableTower(history, h).eval() for h in sorted(set(settings.half_lives))}
    return FittedKind("ease", float(ease.lam), modules, item_part(items, np.asarray(x.sum(axis=0)).ravel() > 0))


def fit_slit(config: TrainConfig, data: TrainingData) -> FittedKind:
    """SLIT on the train sequences, the served window long (lambda and half-life on valid), factored at
    `ease.transition_rank`; its item part keeps B's column lengths."""
    settings = config.ease
    sequences = user_sequences(data.train, data.n_users)
    slit = SLIT(lambdas=tuple(settings.transition_lambdas), half_lives=tuple(settings.transition_half_lives),
                window=data.window.size).fit_sequences(sequences, data.n_items, data.valid, data.train,
                                                       metric=config.train.select_metric)
    rank = settings.transition_rank or 4 * config.model.dim
    history, items = factor_weights(slit.weights, rank, seed=config.train.seed)
    scorable = np.asarray((data.item_counts > 0).numpy())
    half_life = float(slit.half_life)
    return FittedKind("slit", float(slit.lam), {half_life: HistoryTableTower(history, half_life).eval()},
                      item_part(items, scorable, keep_norms=True))


def fit_closed_form_members(config: TrainConfig, data: TrainingData, tower_users: np.ndarray,
                            tower_items: np.ndarray, tower_temperatures: list[float],
                            ctx: DistContext) -> tuple[list[ClosedFormMember], list[dict[str, Any]]]:
    """(the members kept, what was decided per kind for `metrics.json`): EASE, then SLIT, each at the weight
    valid chooses on top of the towers and what was kept before it.

    A kind is not considered when its weights are all 0 (no report); it is skipped (reported with the reason)
    when the catalogue is too large, there is no valid split, or (SLIT) the split has no time order; it is not
    kept when no candidate beats what was kept before by more than `ease.min_gain_se` paired standard errors.

    Why the noise guard: the best of ~20 candidates on a valid split of a few hundred users is often ahead by
    luck. On a sparse next-item set (943 users, valid NDCG@10 .0360 -> .0365, 0.3 SE) the kept EASE member
    cost 10 % of test Recall@20; where a member helps, its valid gain is 1.5-5 SE (BENCHMARKS.md).
    """
    settings = config.ease
    kinds = [(kind, fit) for kind, fit, weights in (("ease", fit_ease, settings.weights),
                                                     ("slit", fit_slit, settings.transition_weights))
             if any(w > 0 for w in weights)]
    inverse_sum = float(np.sum(1.0 / np.asarray(tower_temperatures, dtype=np.float64)))
    user_parts, item_parts, scales = [tower_users], [tower_items], [1.0]
    kept: list[ClosedFormMember] = []
    reports: list[dict[str, Any]] = []
    histories = data.train_histories()
    base: np.ndarray | None = None  # valid metric per user of what is kept so far
    for kind, fit in kinds:
        skipped = (f"{data.n_items} items is over ease.max_items {settings.max_items}" if data.n_items > settings.max_items
                   else "no valid interactions to choose its weight on" if not data.valid.height
                   else f"the {data.split_strategy} split has no time order" if kind == "slit"
                   and data.split_strategy not in TIME_ORDERED else None)
        if skipped:
            log.info("closed-form member %s: skipped, %s", kind, skipped)
            reports.append({"kind": kind, "weight": 0.0, "skipped": skipped})
            continue
        if base is None:
            base = valid_per_user(data, concat_members(user_parts, scales), concat_members(item_parts, scales),
                                  config.train.select_metric, ctx)
        began = time.perf_counter()
        member = choose_weight(config, data, fit(config, data), histories, user_parts, item_parts, scales, base,
                               inverse_sum, ctx)
        member.seconds = time.perf_counter() - began  # fit + choice
        reports.append(member.describe())
        if member.weight > 0:
            kept.append(member)
            user_parts, item_parts = [*user_parts, member.users], [*item_parts, member.items]
            scales = [*scales, float(np.sqrt(member.weight))]
            base = member.valid_per_user
    return kept, reports


def choose_weight(config: TrainConfig, data: TrainingData, fitted: FittedKind, histories: list[list[int]],
                  user_parts: list[np.ndarray], item_parts: list[np.ndarray], scales: list[float], base: np.ndarray,
                  inverse_sum: float, ctx: DistContext) -> ClosedFormMember:
    """The fitted kind at the weight (and half-life) valid prefers over `base` (what is kept so far), or at
    weight 0 when no candidate clears the noise guard."""
    began = time.perf_counter()
    settings, metric = config.ease, config.train.select_metric
    weights = settings.weights if fitted.kind == "ease" else settings.transition_weights
    half_lives = sorted(fitted.modules)
    # weight 0 (what was kept before) is a candidate only when listed: ease.weights=[1] forces the member in
    per_user: dict[tuple[float, float], np.ndarray] = {(0.0, half_lives[0]): base} if 0.0 in weights else {}
    member_users: dict[float, np.ndarray] = {}
    for half_life in half_lives:
        member_users[half_life] = encode_histories(fitted.modules[half_life], histories)
        for alpha in sorted(set(weights) - {0.0}):
            scale = [*scales, float(np.sqrt(alpha))]
            per_user[alpha, half_life] = valid_per_user(
                data, concat_members([*user_parts, member_users[half_life]], scale),
                concat_members([*item_parts, fitted.items], scale), metric, ctx)
    scores = {key: float(values.mean()) for key, values in per_user.items()}
    best, best_half_life = max(scores, key=lambda key: (scores[key], -key[0], -key[1]))
    gain_se = paired_gain_se(per_user[best, best_half_life], base) if best > 0 else 0.0
    several = len(half_lives) > 1 and fitted.kind == "ease"
    labelled = {(f"{a:g}" if not several or a == 0 else f"{a:g}@{h:g}"): v for (a, h), v in scores.items()}
    best_label = f"{best:g}" if not several or best == 0 else f"{best:g}@{best_half_life:g}"
    if best > 0 and 0.0 in weights and gain_se <= settings.min_gain_se:
        log.info("closed-form member %s: best candidate %s is ahead by %.2f paired SE on valid (<= ease.min_gain_se "
                 "%g): not kept", fitted.kind, best_label, gain_se, settings.min_gain_se)
        best, best_half_life = 0.0, half_lives[0]
    module = fitted.modules[best_half_life]
    log.info("closed-form member %s: lambda %g, rank %d, half-life %s; valid %s by weight%s %s -> weight %g (%.0f s)",
             fitted.kind, fitted.lam, module.rank, "/".join(f"{h:g}" for h in half_lives), metric,
             "@half-life" if several else "", ", ".join(f"{k}: {v:.4f}" for k, v in labelled.items()), best,
             time.perf_counter() - began)
    return ClosedFormMember(fitted.kind, module, member_users[best_half_life], fitted.items, fitted.lam, best,
                            best_half_life, 1.0 / (best * inverse_sum) if best > 0 else float("inf"), labelled,
                            time.perf_counter() - began, gain_se, best_label, per_user[best, best_half_life])

