"""FeatureStore: the one way in to features, for training, evaluation and serving (Feast's `FeatureStore`).

Why one façade: a model is only trustworthy offline when the features it was trained and
evaluated on are, key by key, the features serving reads. So the user-history window (how many
events, in which order) is defined once (`FeatureWindow`), training and evaluation read histories
through `historical_windows` / `get_historical_features`, serving reads them through `online`,
and a served run is checked against what the online store was materialised with
(`compatibility_problems`). No caller builds its own Redis client or key namespace.

Example::

    fs = FeatureStore(window=50)
    windows = fs.historical_windows(train_interactions, item_index_by_id)   # training / evaluation
    fs.online.get_user_history("196", fs.window.size)                       # serving
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import redis

from feature_store.definitions import HIST_ITEMS, USER_HISTORY, FeatureInputs
from feature_store.online import KEY_LAYOUT, OnlineStore
from recsys.config import get_settings
from recsys.data.schema import Dataset


@dataclass(frozen=True)
class FeatureWindow:
    """The user-history window the user tower sees, in training, evaluation and serving alike.

    The last `size` events of a user, ordered by (timestamp, item_index), read oldest first
    (`USER_HISTORY` keeps them newest first; both stores hold exactly this list).

    Attributes:
        size: events kept (RECSYS_ONLINE_HISTORY_CAP by default; the online store's ``history_cap``).
        definition: name and version of the feature definition that computes it.
    """

    size: int
    definition: str = f"{USER_HISTORY.name}-v{USER_HISTORY.version}"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"the feature window must hold at least 1 event, got {self.size}")

    @classmethod
    def default(cls) -> "FeatureWindow":
        return cls(get_settings().online_history_cap)

    def describe(self) -> dict[str, Any]:
        """What a run records (run.json ``feature_window``) and the online store is checked against."""
        return {"size": self.size, "definition": self.definition}


def materialize_command(dataset: str, window: int, split: str | None = None) -> str:
    """The command that (re)builds an online store a run can serve from; named in every mismatch message."""
    return f"recsys features materialize --dataset {dataset} --history-cap {window}" + (
        f" --train-split {split}" if split else "")


def compatibility_problems(store_meta: Mapping[str, str], *, dataset: str, data_version: str | None,
                           window: int | None, namespace: str, split: str | None = None) -> list[str]:
    """Why a run cannot be served from an online store version (empty: it can).

    Args:
        store_meta: the meta hash of the store's active version (`OnlineStore.version_info`).
        dataset / data_version / window: what the run was trained on (run.json ``dataset``,
            ``data_version``, ``feature_window.size``); None skips that check (runs that predate it).
        split: the run's split strategy, only used to word the command to run.
    """
    problems = []
    held = f"dataset '{store_meta.get('dataset')}' version {store_meta.get('dataset_version')}"
    if data_version is not None and store_meta.get("dataset_version") != data_version:
        problems.append(f"the online store (namespace '{namespace}') holds {held}, but the run was trained on "
                        f"dataset '{dataset}' version {data_version}")
    stored_window = store_meta.get("history_cap")
    if window is not None and stored_window != str(window):
        problems.append(f"the online store (namespace '{namespace}') was materialised with a history window of "
                        f"{stored_window} events, but the run's feature_window is {window}")
    stored_definition = store_meta.get("feature_definition")
    if stored_definition is not None and stored_definition != FeatureWindow(1).definition:
        problems.append(f"the online store (namespace '{namespace}') was materialised by feature definition "
                        f"{stored_definition}, this code computes {FeatureWindow(1).definition}")
    if store_meta.get("key_layout") != KEY_LAYOUT:
        problems.append(f"the online store (namespace '{namespace}') was written with key layout "
                        f"{store_meta.get('key_layout', '1')}, this code reads layout {KEY_LAYOUT} (per-user hash tags)")
    if problems:
        command = materialize_command(dataset, window or int(stored_window or get_settings().online_history_cap), split)
        problems.append(f"run `{command}` (same REDIS_URL and RECSYS_REDIS_NAMESPACE) to serve this run")
    return problems


class FeatureStore:
    """Historical and online reads of the feature definitions, under one window.

    Args:
        window: the user-history window (events); default RECSYS_ONLINE_HISTORY_CAP.
        client: a Redis client for the online store (default: `connect_redis()` on first use).
        namespace: the online store's key namespace (default RECSYS_REDIS_NAMESPACE).
        offline_root: the offline Parquet store (default ``<RECSYS_STORE_DIR>/offline``).
    """

    def __init__(self, window: int | FeatureWindow | None = None, *, client: redis.Redis | None = None,
                 namespace: str | None = None, offline_root: Path | None = None) -> None:
        if window is None:
            window = FeatureWindow.default()
        self.window = window if isinstance(window, FeatureWindow) else FeatureWindow(int(window))
        self._client, self._namespace, self.offline_root = client, namespace, offline_root
        self._online: OnlineStore | None = None

    # -- historical (training, evaluation) ---------------------------------------------------------
    def historical_windows(self, interactions: pl.DataFrame, item_index_by_id: Mapping[str, int] | None = None,
                           n_users: int | None = None) -> list[list[int]]:
        """Each user's window as of after their last event in `interactions`, oldest first.

        This is the point-in-time history at the end of `interactions` (for training: the train
        split), computed by the same `USER_HISTORY` pipeline that materialises the online store,
        so a store materialised from the same rows serves exactly these lists.

        Args:
            interactions: rows with ``user_id``, ``user_index``, ``item_id``, ``item_index``, ``timestamp``.
            item_index_by_id: maps the window's item ids to indices (default: from `interactions`).
            n_users: length of the returned list (row = user_index); users without events get [].
        """
        frame = interactions.select("user_id", "user_index", "item_id", "item_index", "timestamp")
        inputs = FeatureInputs(interactions=frame.lazy(), items=pl.LazyFrame(), history_cap=self.window.size,
                               item_features={})
        latest = (USER_HISTORY.build(inputs)
                  .filter(pl.col("timestamp") == pl.col("timestamp").max().over("user_id"))
                  .select("user_id", HIST_ITEMS).collect())
        users = frame.select("user_id", "user_index").unique("user_id")
        latest = latest.join(users, on="user_id", how="inner")
        if item_index_by_id is None:
            pairs = frame.select("item_id", "item_index").unique("item_id")
            item_index_by_id = dict(zip(pairs["item_id"].to_list(), pairs["item_index"].to_list()))
        size = n_users if n_users is not None else (int(frame["user_index"].max()) + 1 if frame.height else 0)
        windows: list[list[int]] = [[] for _ in range(size)]
        for user_index, newest_first in latest.select("user_index", HIST_ITEMS).iter_rows():
            windows[user_index] = [item_index_by_id[item] for item in reversed(newest_first)]
        return windows

    def get_historical_features(self, entity_df: pl.DataFrame | pl.LazyFrame, dataset: Dataset) -> pl.DataFrame:
        """Point-in-time user history for (user_id, timestamp) rows, from the offline Parquet store."""
        from feature_store.offline import get_historical_features  # noqa: PLC0415 - polars-only path

        return get_historical_features(entity_df, dataset, self.window.size, self.offline_root)

    # -- online (serving) --------------------------------------------------------------------------
    @property
    def online(self) -> OnlineStore:
        """The online store (connects on first use: training never needs Redis)."""
        if self._online is None:
            if self._client is None:
                from feature_store.redis_server import connect_redis  # noqa: PLC0415

                self._client = connect_redis()
            self._online = OnlineStore(self._client, self._namespace)
        return self._online

    def online_window(self, user_id: str) -> list[tuple[str, int]]:
        """The user's current window from the online store, (item_id, timestamp) oldest first."""
        return self.online.get_user_history(user_id, self.window.size)[::-1]

    def check_run(self, run_meta: Mapping[str, Any]) -> list[str]:
        """Why the online store cannot serve a run with this run.json (empty: it can)."""
        from feature_store.online import NoActiveVersionError  # noqa: PLC0415

        try:
            meta = self.online.version_info()
        except NoActiveVersionError as err:
            return [str(err)]
        return run_problems(meta, run_meta, self.online.namespace)

    def materialize(self, dataset: Dataset | str, **kwargs: Any):
        """Compute the features of `dataset` under this store's window; write Parquet and a new online version."""
        from feature_store.materialize import materialize  # noqa: PLC0415

        return materialize(dataset, history_cap=self.window.size, client=self._client, namespace=self._namespace,
                           offline_root=self.offline_root, **kwargs)


def run_window(run_meta: Mapping[str, Any]) -> int | None:
    """The window a run was trained with (run.json ``feature_window``), None for runs that predate it."""
    window = run_meta.get("feature_window")
    return int(window["size"]) if isinstance(window, Mapping) and "size" in window else None


def run_problems(store_meta: Mapping[str, str], run_meta: Mapping[str, Any], namespace: str) -> list[str]:
    """`compatibility_problems` for a run's run.json."""
    return compatibility_problems(store_meta, dataset=str(run_meta.get("dataset")),
                                  data_version=run_meta.get("data_version"), window=run_window(run_meta),
                                  namespace=namespace, split=run_meta.get("split_strategy"))


def as_index_lists(windows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(flat items, lengths) of index windows, for jagged tensors."""
    lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
    flat = np.fromiter((i for w in windows for i in w), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths
