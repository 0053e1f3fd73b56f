"""Turning a run directory into score functions and per-medium vectors in *dataset* indices.

A run stores its own user/item order; evaluation works in the dataset's indices (that is where
the split lives). Rows are matched by id, never by position, so a run trained on a re-ordered or
partial catalogue is still scored correctly: users the run has no vector for (e.g. test users
with no train history) get the fallback scores serving would give them (train popularity),
never an all-tie row (ties make rank-based metrics like MRR arbitrary); items the run does not
know are never recommended.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from feature_store.store import FeatureStore, run_window
from recsys.new_items import item_prior, recorded_boost
from recsys.artifact import RunArtifact, RunDirError, UserEncoder
from recsys.data.schema import Dataset
from recsys.metrics import ScoreFn

log = logging.getLogger(__name__)
MEDIA_VECTORS_FILE = "item_media_vectors.npz"


@dataclass(frozen=True)
class AlignedRun:
    """A run's vectors re-indexed to the dataset; `item_known[i]` is False for items absent from the run."""

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_known: np.ndarray
    user_known: np.ndarray
    new_item_prior: np.ndarray | None = None  # (n_items,) what serving adds to items unseen in training

    @property
    def n_users_unknown(self) -> int:
        return int((~self.user_known).sum())


def _positions(run_ids: list[Any], dataset_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(dataset rows, run rows) of the ids both sides know."""
    index = {str(i): pos for pos, i in enumerate(dataset_ids)}
    pairs = [(index[str(i)], pos) for pos, i in enumerate(run_ids) if str(i) in index]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    arr = np.asarray(pairs, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def users_as_of(encoder: UserEncoder, window: int | None, events: pl.DataFrame, n_users: int,
                item_index_by_id: dict[str, int] | None = None) -> np.ndarray:
    """(n_users, d): each user's vector from their feature window at the end of `events`, computed by the
    served encoder (row = user_index; users without events get the encoder's empty-history vector).

    This is what the feed computes once the online store holds `events`: ranking the test events of a
    leave-one-out split reads train + valid (`EvalSplit.known`), which the run's train-time vectors lack.
    """
    windows = FeatureStore(window).historical_windows(events, item_index_by_id, n_users)
    return np.asarray(encoder.encode(windows), dtype=np.float32)


def align_run(run: RunArtifact, dataset: Dataset, history: pl.DataFrame | None = None) -> AlignedRun:
    """Copy the run's vectors into dataset-indexed matrices, matching users and items by id.

    `history`: encode users from these events (dataset rows) with the run's served encoder instead of
    taking the run's train-time user vectors; the users with at least one event count as known.
    """
    run_items, run_users = run.items.sort("item_index"), run.users.sort("user_index")
    ds_item, pos_item = _positions(run_items["item_id"].to_list(), dataset.item_ids)
    ds_user, pos_user = _positions(run_users["user_id"].to_list(), dataset.user_ids)
    if len(ds_item) == 0:
        raise RunDirError(f"{run.run_dir}: none of its {run_items.height} item ids is in dataset {dataset.name}")
    d = run.item_vectors.shape[1]
    items = np.zeros((dataset.n_items, d), np.float32)
    users = np.zeros((dataset.n_users, d), np.float32)
    items[ds_item] = run.item_vectors[run_items["item_index"].to_numpy()[pos_item]]  # vector row = item_index
    users[ds_user] = run.user_vectors[run_users["user_index"].to_numpy()[pos_user]]
    item_known = np.zeros(dataset.n_items, bool)
    item_known[ds_item] = True
    if "taken_down" in run_items.columns:  # taken down before training: in the run, never served
        item_known[ds_item[run_items["taken_down"].fill_null(False).to_numpy()[pos_item]]] = False
    user_known = np.zeros(dataset.n_users, bool)
    user_known[ds_user] = True
    if history is not None:
        users = users_as_of(run.user_encoder, run_window(run.meta), history, dataset.n_users, run.item_index_by_id)
        user_known = np.zeros(dataset.n_users, bool)
        user_known[history["user_index"].to_numpy()] = True
    aligned = AlignedRun(users, items, item_known, user_known, _new_item_prior(run, ds_item, pos_item, dataset.n_items))
    if not item_known.all():
        log.warning("run %s lacks %d of %d dataset items; they are never recommended",
                    run.model_version, int((~item_known).sum()), dataset.n_items)
    if aligned.n_users_unknown:
        log.info("run %s has no vector for %d dataset users; they get the fallback scores",
                 run.model_version, aligned.n_users_unknown)
    return aligned


def _new_item_prior(run: RunArtifact, ds_item: np.ndarray, pos_item: np.ndarray, n_items: int) -> np.ndarray | None:
    """The run's recorded new-item prior on items with no train interaction (as `serving.retriever`
    applies it to a feed), in dataset item order; None when the run records none."""
    boost = recorded_boost(run.meta)
    if not boost or "popularity" not in run.items.columns:
        return None
    popularity = run.items.sort("item_index")["popularity"].to_numpy()
    prior = np.zeros(n_items, np.float32)
    prior[ds_item] = item_prior(boost, np.nan_to_num(popularity[pos_item]) == 0)
    return prior


def aligned_score_fn(aligned: AlignedRun, fallback: np.ndarray | None = None, served_prior: bool = False) -> ScoreFn:
    """user vector . item vector, the two-tower score; unknown items get -inf.

    `fallback` (n_items,) scores the users the run has no vector for (None: their zero vector).
    `served_prior`: add the run's new-item prior to the users with a vector, exactly as the feed
    does (what is evaluated is what is served); the cold-start task applies its own policy.
    """
    prior_t = torch.from_numpy(aligned.new_item_prior) if served_prior and aligned.new_item_prior is not None else None
    users_t = torch.from_numpy(aligned.user_vectors)
    items_t = torch.from_numpy(aligned.item_vectors)
    unknown_items = torch.from_numpy(~aligned.item_known)
    unknown_users = torch.from_numpy(~aligned.user_known)
    fallback_t = torch.as_tensor(fallback, dtype=torch.float32) if fallback is not None else None

    def score(batch: np.ndarray) -> np.ndarray:
        index = torch.as_tensor(batch, dtype=torch.long)
        scores = users_t[index] @ items_t.T
        if prior_t is not None:
            scores += prior_t
        if fallback_t is not None:
            scores[unknown_users[index]] = fallback_t
        scores[:, unknown_items] = -torch.inf
        return scores.numpy()

    return score


def load_media_vectors(run: RunArtifact, dataset: Dataset) -> dict[str, np.ndarray]:
    """Per-medium item vectors (`item_media_vectors.npz`, rows = run item_index) in dataset item order."""
    path = run.run_dir / MEDIA_VECTORS_FILE
    if not path.exists():
        raise RunDirError(f"{path}: missing; the cross-media task needs the run's per-medium item vectors")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: np.asarray(npz[key], dtype=np.float32) for key in npz.files}
    except Exception as exc:
        raise RunDirError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
    item_rows = run.items.sort("item_index")
    ds_item, run_item = _positions(item_rows["item_id"].to_list(), dataset.item_ids)
    order = item_rows["item_index"].to_numpy()
    out: dict[str, np.ndarray] = {}
    for medium, vectors in raw.items():
        if vectors.ndim != 2 or vectors.shape[0] != run.items.height or not np.isfinite(vectors).all():
            raise RunDirError(f"{path}: '{medium}' has shape {vectors.shape} (expected {run.items.height} finite rows)")
        aligned = np.zeros((dataset.n_items, vectors.shape[1]), np.float32)
        aligned[ds_item] = vectors[order[run_item]]
        out[medium] = aligned
    return out

