"""Which interactions an offline evaluation retrieves, which it masks, and how items are grouped.

One place decides the protocol so every model and baseline is judged identically:
- the split comes from the run (`split_strategy` in run.json) or the dataset's default
  (TikTok: its predefined published split; ML-100K: leave-last-out), with the run's tie rule
  (`data.tie_break`; runs from before the rule existed used item-index);
- the held-out split (`valid` or `test`) is retrieved by ranking **all** items;
- a user is ranked from the events a feed had read when the held-out events happened, and those
  items are masked (`EvalSplit.known`, `recsys.data.splits.known_before`): train events for `valid`
  and for the predefined split (DiffMM's published protocol); train + valid events for `test` on a
  time-ordered split (leave-last-out, temporal), which is the point-in-time history the feed reads
  after the valid event, and RecBole's leave-one-out test protocol. Users with >= 1 held-out item
  are evaluated;
- an item's media type is its media joined with '+' in canonical order ("image+audio", "text");
- cold items are items with no train interaction at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from recsys.data.schema import Dataset
from recsys.data.splits import TIE_BREAKS, TieBreak, apply_split, fold_valid_into_train, known_before

EVAL_SPLITS = ("valid", "test")
SPLIT_STRATEGIES = ("leave-last-out", "temporal", "predefined")


class EvaluationError(ValueError):
    """A request the harness cannot answer (unknown split, missing media, no held-out data)."""


@dataclass(frozen=True)
class EvalSplit:
    """A dataset with its split applied, viewed as (train, held-out) pairs in dataset indices."""

    dataset: Dataset
    split: str
    strategy: str
    refit: bool = False  # the run trained on train + valid (`train.refit`): its train split holds valid's events

    @cached_property
    def train(self) -> pl.DataFrame:
        return self.dataset.split("train")

    @cached_property
    def held_out(self) -> pl.DataFrame:
        return self.dataset.split(self.split)

    @cached_property
    def known(self) -> pl.DataFrame:
        """The events users are ranked from and whose items are masked (see `known_before`)."""
        return known_before(self.dataset, self.split, self.strategy)

    @property
    def ranked_from(self) -> str:
        """The splits users are ranked from and masked with, as reports state it ("train", "train+valid")."""
        return "train+valid" if self.reads_past_train or self.refit else "train"

    @property
    def reads_past_train(self) -> bool:
        """True when the ranking input holds events the run never trained on (test after valid): user
        vectors must then be encoded from `known`, not taken from the run's train-time vectors."""
        return self.known.height != self.train.height

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    @cached_property
    def cold_items(self) -> np.ndarray:
        """Item indices with no train interaction (their popularity, and any ID embedding, is untrained)."""
        seen = np.zeros(self.n_items, dtype=bool)
        seen[self.train["item_index"].to_numpy()] = True
        return np.flatnonzero(~seen)

    @cached_property
    def popularity(self) -> np.ndarray:
        """Train interactions per item: MostPopular's scores and the fallback for users without a vector."""
        return np.bincount(self.train["item_index"].to_numpy(), minlength=self.n_items).astype(np.float32)

    @cached_property
    def item_media_type(self) -> pl.DataFrame:
        """(item_index, media) with media = '+'-joined media names, null when the item has none."""
        label = pl.col("media").list.join("+")
        return self.dataset.items.select(
            "item_index", pl.when(label.str.len_chars() > 0).then(label).otherwise(None).alias("media"))

    @cached_property
    def n_train(self) -> pl.DataFrame:
        """(user_index, n_train): number of train interactions per user."""
        return self.train.group_by("user_index").agg(pl.len().cast(pl.Int64).alias("n_train"))


def prepare_split(dataset: Dataset, split: str = "test", strategy: str | None = None,
                  tie_break: TieBreak = "file-order", refit: bool = False) -> EvalSplit:
    """Apply `strategy` (None: the dataset's default; `tie_break`: leave-last-out's tie rule) and check
    that `split` has something to rank. `refit`: the run was trained again on train + valid (`train.refit`):
    its train is train + valid (ranked from and masked), and valid is refused (it trained on it)."""
    if tie_break not in TIE_BREAKS:
        raise EvaluationError(f"unknown tie rule {tie_break!r} (expected one of: {', '.join(TIE_BREAKS)})")
    if split not in EVAL_SPLITS:
        raise EvaluationError(f"unknown split {split!r} (expected one of: {', '.join(EVAL_SPLITS)})")
    if strategy is not None and strategy not in SPLIT_STRATEGIES:
        raise EvaluationError(f"unknown split strategy {strategy!r} (expected one of: {', '.join(SPLIT_STRATEGIES)})")
    if strategy == "predefined" and "split" not in dataset.interactions.columns:
        raise EvaluationError(f"dataset {dataset.name} has no predefined split; use leave-last-out or temporal")
    if refit and split == "valid":
        raise EvaluationError("this run was refit on train + valid (train.refit): valid is part of its training data, "
                              "so ranking it measures nothing; the selection fit's valid figures are in the run's "
                              "metrics.json (\"valid\"), and test is the refit's held-out split")
    split_ds = apply_split(dataset, strategy, tie_break)  # type: ignore[arg-type]
    if refit:
        split_ds = fold_valid_into_train(split_ds)
    resolved = strategy or ("predefined" if "split" in dataset.interactions.columns else "leave-last-out")
    ev = EvalSplit(split_ds, split, resolved, refit)
    if ev.held_out.height == 0:
        raise EvaluationError(f"dataset {dataset.name}: split {split!r} ({resolved}) has no interactions")
    return ev
