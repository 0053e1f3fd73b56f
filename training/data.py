"""Tensors a training run needs, built once from a `Dataset` and its split (train data only).

Everything learned (ID rows, graphs, popularity, histories, alignment pairs) comes from `train` (train + valid for a
refit, `train.refit`);
`valid` and `test` are only evaluated. Items never seen in train are "cold": content-only vectors.

What a user *is* to the user tower (its history, and the user side of the interaction graph) is
the feature store's window (`FeatureStore.historical_windows`: the last `data.feature_window` train
events, the list the online store serves), cleaned by the encoder's own `distinct_latest`, so the
user vectors training evaluates are the ones the server computes from Redis. The loss still sees
every distinct train (user, item) pair as a positive.

The dataset's live-catalogue log (items added and taken down while serving) is folded in first
(`training.catalogue_fold`): added items are cold items with content, taken-down items stay in
the tables and histories but are no candidates (`not_candidates`). Then, with `data.served_events`, the feed's
accepted events (`training.served_events_fold`): interactions after the dataset's, so what users clicked while
serving, items added live included, is trained on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from feature_store.catalogue_log import CatalogueFold
from feature_store.served_events import ServedEventsFold
from feature_store.store import FeatureStore, FeatureWindow, as_index_lists
from recsys.config import get_settings
from recsys.data import Dataset, load_dataset
from recsys.data.splits import apply_split, fold_valid_into_train
from recsys.models.graph import FrozenSparse, InteractionGraph, item_knn_graph
from recsys.models.item_tower import ItemCatalog
from recsys.models.user_encoder import distinct_latest
from recsys.models.user_tower import UserHistories
from training.config import DataConfig
from training.catalogue_fold import describe_fold, fold_content, fold_log
from training.served_events_fold import dataset_reference, fold_events
from training.content import ItemContent, load_item_content

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """A dataset with its split applied, as training tensors.

    Attributes:
        train_users / train_items: one row per distinct train (user, item) pair, in time order.
        histories: every user's feature window (the served history), distinct items, oldest first
            (row = user_index); the interaction graph's user rows are these windows too.
        window: the feature window; data_version: the dataset's version before the split (what
            the online store records).
        item_counts: train interactions per item; warm = item_counts > 0.
        catalogue: the live-catalogue log folded in (`training.catalogue_fold`), None without one;
        served_events: the feed's accepted events folded in (`training.served_events_fold`), None without any;
        not_candidates: items no ranking may return (taken down, or added live without usable media).
    """

    dataset: Dataset
    split_strategy: str
    content: ItemContent
    catalog: ItemCatalog
    histories: UserHistories
    graph: InteractionGraph
    train_users: torch.Tensor
    train_items: torch.Tensor
    item_counts: torch.Tensor
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    window: FeatureWindow
    data_version: str
    catalogue: CatalogueFold | None = None
    not_candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    catalogue_summary: str = ""
    served_events: ServedEventsFold | None = None

    @property
    def n_users(self) -> int:
        return self.dataset.n_users

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    @property
    def warm(self) -> torch.Tensor:
        return self.item_counts > 0

    @property
    def media_dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.content.features.items()}

    def knn_graph(self, k: int, standardise: bool = False) -> FrozenSparse | None:
        """The frozen content kNN graph (cached per k and feature space; content of *all* items, no interactions)."""
        if k <= 0 or not self.content.features:
            return None
        cache = self.__dict__.setdefault("_knn", {})
        if (k, standardise) not in cache:
            cache[k, standardise] = FrozenSparse(item_knn_graph(self.content.features, self.content.masks, k,
                                                                standardise=standardise))
        return cache[k, standardise]

    def train_histories(self) -> list[list[int]]:
        """Per user_index, the served history (cleaned feature window) the user encoder is checked against."""
        lengths = self.histories.lengths.numpy()
        items = self.histories.items.numpy()
        ends = np.cumsum(lengths)
        return [items[e - n:e].tolist() for n, e in zip(lengths, ends)]

    def catalogue_record(self) -> dict[str, Any] | None:
        """What run.json records of the folded log (`catalogue_log`); None without one."""
        if self.catalogue is None:
            return None
        return {**self.catalogue.describe(), "not_candidates": int(self.not_candidates.sum()),
                "summary": self.catalogue_summary}

    def describe(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items, "n_train_pairs": len(self.train_users),
                "cold_items": int((~self.warm).sum()), "media": list(self.catalog.media),
                "feature_window": self.window.size,
                "users_over_window": int((np.bincount(self.train_users.numpy(), minlength=self.n_users)
                                          > self.window.size).sum())}


def _distinct_train_pairs(train: pl.DataFrame) -> pl.DataFrame:
    """One row per (user, item), at its latest position, in (user, time) order."""
    return (train.sort("timestamp", "item_index")
            .unique(["user_index", "item_index"], keep="last", maintain_order=True)
            .sort("user_index", "timestamp", "item_index")
            .select("user_index", "item_index"))


def build_training_data(config: DataConfig, dataset: Dataset | None = None, valid_in_train: bool = False) -> TrainingData:
    """Load (or take) the dataset, apply the configured split and build every training tensor.

    `valid_in_train`: a refit's data (`train.refit`): valid relabelled train (`fold_valid_into_train`), so
    every tensor above learns from it and nothing is left in valid."""
    ds = dataset if dataset is not None else load_dataset(config.dataset)
    if config.split == "predefined" and "split" not in ds.interactions.columns:
        raise ValueError(f"dataset {ds.name} has no predefined split; set data.split to leave-last-out or temporal")
    # the version of the interactions and the dataset's own items: what the online store was materialised from
    source_version = ds.version
    settings = get_settings()
    store_dir = Path(config.content_store) if config.content_store else settings.store_dir
    base = ds
    ds, fold = fold_log(base, store_dir)
    ds, served = (fold_events(ds, settings.served_events_root(store_dir), dataset_reference(config.dataset, base),
                              source_version)
                  if config.served_events else (ds, None))
    ds = apply_split(ds, config.split, config.tie_break)
    if valid_in_train:
        ds = fold_valid_into_train(ds)
    train, valid, test = ds.split("train"), ds.split("valid"), ds.split("test")
    pairs = _distinct_train_pairs(train)
    users = pairs["user_index"].to_numpy().astype(np.int64)
    items = pairs["item_index"].to_numpy().astype(np.int64)
    counts = np.bincount(items, minlength=ds.n_items)
    store = FeatureStore(config.feature_window)
    windows = store.historical_windows(train, n_users=ds.n_users)
    window_items, window_lengths = as_index_lists([distinct_latest(w, ds.n_items) for w in windows])
    window_users = np.repeat(np.arange(ds.n_users, dtype=np.int64), window_lengths)
    content = load_item_content(base, config.media, Path(config.content_store) if config.content_store else None)
    not_candidates = np.zeros(ds.n_items, bool)
    summary = ""
    if fold is not None:
        content, report = fold_content(content, ds, fold, store_dir)
        index_of = dict(zip(ds.items["item_id"].to_list(), ds.items["item_index"].to_list()))
        not_candidates[[index_of[i] for i in fold.removed + report.unusable]] = True
        summary = describe_fold(fold, report, list(content.features))
        if os.environ.get("RANK", "0") == "0":  # once under torchrun
            log.info("%s", summary)
    catalog = ItemCatalog.from_arrays(content.features, content.masks, counts)
    return TrainingData(
        dataset=ds, split_strategy=config.split, content=content, catalog=catalog,
        histories=UserHistories.from_flat(window_items, window_lengths),
        graph=InteractionGraph.from_pairs(window_users, window_items, ds.n_users, ds.n_items),
        train_users=torch.as_tensor(users), train_items=torch.as_tensor(items),
        item_counts=torch.as_tensor(counts), train=train, valid=valid, test=test, window=store.window,
        data_version=source_version, catalogue=fold, not_candidates=not_candidates, catalogue_summary=summary,
        served_events=served)
