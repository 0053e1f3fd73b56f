"""Fit the closed-form member (EASE or GF-CF) after the towers and keep it only where valid says it helps.

Measured before it was built (`benchmarks/ease_mix.py --rank K --unit`, BENCHMARKS.md "EASE"): the member at
weight .5 lifted valid and test N@20 on dense ml100k-random (+3 %) and Amazon-Baby (+8 %) and lowered TikTok's
valid at any weight, so the weight is a choice made on valid, with 0 (no member) among the candidates.

Steps (every rank fits the same, deterministically; rank 0 scores valid and shares the scores):
1. per kind of `ease.kinds`: EASE on the train interactions, lambda chosen on valid
   (`recsys.baselines.ease.EASE.fit_matrix`: the baseline's own code), its weights factored at rank `ease.rank`
   (`recsys.models.closed_form`); or GF-CF's graph filter factored from a truncated SVD at `ease.gfcf_rank`
   (`recsys.baselines.gfcf.factored_filter`: no inverse, so any catalogue size; on Gowalla, 41k items, the
   exact GF-CF baseline is ahead of the trained towers on test);
2. each candidate (kind, weight alpha of `ease.weights`, recency half-life of `ease.half_lives`) scored on valid with
   the towers' served vectors: the member's part enters the concatenation with scale sqrt(alpha x sum_k 1/T_k),
   i.e. score = towers' average logit + alpha x the member's cosine; the best candidate (ties: the smaller
   weight and half-life) is kept if it beats the towers alone by more than `ease.min_gain_se` paired SE.
   "Best" is by `ease.select_metric` (default: the towers' `train.select_metric`), which also picks EASE's lambda.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recsys.baselines.base import interaction_matrix
from recsys.baselines.ease import EASE
from recsys.baselines.gfcf import factored_filter
from recsys.data.splits import known_before
from recsys.metrics import per_user_ranking_metrics
from recsys.models.closed_form import HistoryTableTower, factor_weights, item_part
from recsys.models.content_projection import closed_form_content_payload
from recsys.models.ensemble import concat_members
from recsys.models.user_encoder import history_tensors
from training.config import ITEM_FORMS, TrainConfig
from training.data import TrainingData
from training.distributed import DistContext, broadcast
from training.export import served_scorer

log = logging.getLogger(__name__)


@dataclass
class ClosedFormMember:
    """The fitted member as the run's export reads any member: vectors, served payload, content part."""

    module: HistoryTableTower
    users: np.ndarray          # (n_users, rank + 1): the served part of every user's train window
    items: np.ndarray          # (n_items, rank + 1)
    lam: float
    weight: float              # alpha: relative to the towers' average logit
    half_life: float           # recency weighting of the history sum (0 = none)
    temperature: float         # 1 / (alpha x sum_k 1/T_k): its scale in the concatenation is 1/sqrt(T)
    valid_by_weight: dict[str, float] = field(default_factory=dict)  # "weight" or "weight@half-life" -> valid
    seconds: float = 0.0
    gain_se: float = 0.0       # the best candidate's valid gain over the towers alone, in paired standard errors
    best_candidate: str = ""
    item_form: str = "unit"    # "unit" rows, or "lengths": EASE's column lengths kept (`item_part(keep_norms=True)`)
    kind: str = "ease"         # which closed-form model: "ease" or "gf-cf"
    metric: str = ""           # the valid metric its candidates (and EASE's lambda) were chosen by

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
        return {"kind": self.kind, **({"lambda": self.lam} if self.kind == "ease" else {}), "rank": self.module.rank, "weight": self.weight,
                "half_life": self.half_life, "valid_by_weight": self.valid_by_weight,
                "item_form": self.item_form, "best_candidate": self.best_candidate, "gain_se": round(self.gain_se, 2),
                "select_metric": self.metric,
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


def served_mix(tower_users: np.ndarray, tower_items: np.ndarray, member_users: np.ndarray, member_items: np.ndarray,
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The served (users, items) of the towers plus the member at weight `alpha` (the towers alone at 0)."""
    if alpha <= 0:
        return tower_users, tower_items
    scale = [1.0, float(np.sqrt(alpha))]
    return concat_members([tower_users, member_users], scale), concat_members([tower_items, member_items], scale)


@dataclass
class MemberTables:
    """One closed-form model as a history table and an item table (B ~ history . items^T)."""

    kind: str
    history: np.ndarray
    items: np.ndarray
    scorable: np.ndarray  # items with a train event: the others get the member's neutral part
    lam: float = 0.0      # EASE's L2 strength (chosen on valid unless given)


def member_tables(kind: str, x: Any, config: TrainConfig, data: TrainingData, metric: str,
                  lam: float | None = None) -> MemberTables:
    """The closed-form model `kind` fitted on the binary matrix `x`, factored for the two-tower member. EASE's lambda
    is `lam` when given (a refit), else chosen on valid by `metric`."""
    scorable = np.asarray(x.sum(axis=0)).ravel() > 0
    if kind == "gf-cf":
        history, items = factored_filter(x, config.ease.gfcf_rank, seed=config.train.seed)
        return MemberTables(kind, history, items, scorable)
    ease = (EASE(lam=lam).fit_matrix(x, None, data.train) if lam is not None else
            EASE(lambdas=tuple(config.ease.lambdas)).fit_matrix(x, data.valid, data.train, metric=metric))
    history, items = factor_weights(ease.weights, config.ease.rank or config.model.dim, seed=config.train.seed)
    return MemberTables(kind, history, items, scorable, float(ease.lam))


def refit_closed_form_member(config: TrainConfig, chosen: ClosedFormMember, data: TrainingData,
                             tower_temperatures: list[float]) -> ClosedFormMember:
    """The member valid chose, fitted again on a refit's data (train + valid, `train.refit`): the same kind,
    lambda, rank, half-life, item form and weight; only the interactions grow, and its scale follows the refit
    towers' temperatures. Nothing is chosen here (a refit has no valid split)."""
    began = time.perf_counter()
    x = interaction_matrix(data.train, data.n_users, data.n_items)
    tables = member_tables(chosen.kind, x, config, data, config.train.select_metric,
                           lam=chosen.lam if chosen.kind == "ease" else None)
    module = HistoryTableTower(tables.history, chosen.half_life).eval()
    inverse_sum = float(np.sum(1.0 / np.asarray(tower_temperatures, dtype=np.float64)))
    member = replace(chosen, module=module, users=encode_histories(module, data.train_histories()),
                     items=item_part(tables.items, tables.scorable, keep_norms=chosen.item_form == "lengths"),
                     temperature=1.0 / (chosen.weight * inverse_sum), seconds=time.perf_counter() - began)
    log.info("closed-form member refit: %s on %d events, weight %g (%.0f s)", chosen.kind, x.nnz, chosen.weight,
             member.seconds)
    return member


def fit_closed_form_member(config: TrainConfig, data: TrainingData, tower_users: np.ndarray, tower_items: np.ndarray,
                           tower_temperatures: list[float],
                           ctx: DistContext) -> tuple[ClosedFormMember | None, dict[str, Any] | None]:
    """(the closed-form member (kind, weight) valid chooses or None, what was decided for `metrics.json`).

    None when the config turns it off (report None too), or when the catalogue is too large, there is no valid
    split to choose on, or no candidate beats the towers alone on valid by more than `ease.min_gain_se` paired
    standard errors (the report says which, with every candidate's valid score).

    Why the noise guard: the best of ~20 candidates on a valid split of a few hundred users is often ahead by
    luck. On a sparse next-item set (943 users, valid NDCG@10 .0360 -> .0365, 0.3 SE) the kept member cost
    10 % of test Recall@20; where the member helps, its valid gain is 1.5-5 SE (BENCHMARKS.md).
    """
    settings = config.ease
    if not settings.enabled:
        return None, None
    kinds = [kind for kind in dict.fromkeys(settings.kinds) if kind != "ease" or data.n_items <= settings.max_items]
    skipped = (f"{data.n_items} items is over ease.max_items {settings.max_items}" if not kinds
               else "no valid interactions to choose its weight on" if not data.valid.height else None)
    if skipped:
        log.info("closed-form member: skipped, %s", skipped)
        return None, {"kind": settings.kinds[0], "weight": 0.0, "skipped": skipped}
    began = time.perf_counter()
    metric = settings.select_metric or config.train.select_metric
    x = interaction_matrix(data.train, data.n_users, data.n_items)
    tables = {kind: member_tables(kind, x, config, data, metric) for kind in kinds}
    forms = sorted(set(settings.item_forms), key=ITEM_FORMS.index)
    form_items = {(kind, form): item_part(t.items, t.scorable, keep_norms=form == "lengths")
                  for kind, t in tables.items() for form in forms}
    histories = data.train_histories()
    inverse_sum = float(np.sum(1.0 / np.asarray(tower_temperatures, dtype=np.float64)))
    half_lives = sorted(set(settings.half_lives))
    Key = tuple[str, float, float, str]  # (kind, weight, half-life, item form)
    first: Key = (kinds[0], 0.0, half_lives[0], forms[0])  # weight 0: the towers alone, whatever the member
    per_user: dict[Key, np.ndarray] = {}  # candidate -> valid metric per user
    candidates: dict[tuple[str, float], tuple[HistoryTableTower, np.ndarray]] = {}  # (kind, half-life) -> user side
    for kind in kinds:
        for half_life in half_lives:
            module = HistoryTableTower(tables[kind].history, half_life).eval()
            member_users = encode_histories(module, histories)
            candidates[kind, half_life] = (module, member_users)
            for form in forms:
                for alpha in sorted(set(settings.weights) - ({0.0} if first in per_user else set())):
                    per_user[(kind, alpha, half_life, form) if alpha > 0 else first] = valid_per_user(
                        data, *served_mix(tower_users, tower_items, member_users, form_items[kind, form], alpha),
                        metric, ctx)
    scores = {key: float(values.mean()) for key, values in per_user.items()}

    def leader() -> Key:
        return max(scores, key=lambda key: (scores[key], -key[1], -key[2], -ITEM_FORMS.index(key[3]),
                                            -kinds.index(key[0])))

    best_kind, best, best_half_life, best_form = leader()
    # The grid's largest weight won: double it while valid improves (ML-1M chose 2 over the grid's 1), so the
    # grid's end is never the answer by construction. A set whose best weight lies inside the grid is unaffected.
    for _ in range(settings.extend_weights):
        if best == 0 or best < max(key[1] for key in scores):  # (scores holds every weight tried, the grid's too)
            break
        alpha = 2 * best
        key = (best_kind, alpha, best_half_life, best_form)
        per_user[key] = valid_per_user(data, *served_mix(tower_users, tower_items, candidates[best_kind, best_half_life][1],
                                                         form_items[best_kind, best_form], alpha), metric, ctx)
        scores[key] = float(per_user[key].mean())
        if leader() != key:
            break
        best = alpha
    chosen: Key = (best_kind, best, best_half_life, best_form)
    base = per_user.get(first)
    gain_se = paired_gain_se(per_user[chosen], base) if base is not None and best > 0 else 0.0

    def label(kind: str, alpha: float, half_life: float, form: str) -> str:
        """"weight", "weight@half-life" with several half-lives, then " lengths" for that item form; the kind
        first when several were tried."""
        if alpha == 0:
            return "0"
        return (f"{kind} " if len(kinds) > 1 else "") + (
            f"{alpha:g}" if len(half_lives) == 1 else f"{alpha:g}@{half_life:g}") + (
            " lengths" if form == "lengths" else "")

    labelled = {label(*key): v for key, v in scores.items()}
    best_label = label(*chosen)
    if best > 0 and base is not None and gain_se <= settings.min_gain_se:
        log.info("closed-form member: best candidate %s is ahead of the towers alone by %.2f paired SE on valid "
                 "(<= ease.min_gain_se %g): not kept", best_label, gain_se, settings.min_gain_se)
        chosen = first
    best_kind, best, best_half_life, best_form = chosen
    seconds = time.perf_counter() - began
    fitted = ", ".join(f"EASE lambda {t.lam:g}, rank {t.history.shape[1]}" if kind == "ease" else
                       f"GF-CF rank {t.history.shape[1]}" for kind, t in tables.items())
    log.info("closed-form member: %s; valid %s by candidate %s -> %s (%.0f s)", fitted, metric,
             ", ".join(f"{k}: {v:.4f}" for k, v in labelled.items()),
             label(*chosen) if best > 0 else "weight 0", seconds)
    module, member_users = candidates[best_kind, best_half_life]
    member = ClosedFormMember(module, member_users, form_items[best_kind, best_form], tables[best_kind].lam, best,
                              best_half_life, 1.0 / (best * inverse_sum) if best > 0 else float("inf"), labelled,
                              seconds, gain_se, best_label, best_form, best_kind, metric)
    return (member if best > 0 else None), member.describe()
