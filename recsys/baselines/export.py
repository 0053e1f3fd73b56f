"""Write a fitted factorisation baseline (e.g. BPR-MF) as a standard run directory.

Why: a run directory is what serving, `recsys evaluate --run` and the A/B report consume, so an
exported BPR-MF can be served as a control arm and is evaluated by the same run path as a
two-tower model (which also makes it the reference fixture of the evaluation tests).

The run contract wants L2-normalised vectors, but BPR scores are raw dot products. The standard
MIPS-to-cosine reduction keeps every user's ranking exactly: items become
[q_i, sqrt(M^2 - |q_i|^2)] / M (M = largest item norm, so all are unit length) and users
[p_u, 0] / |p_u|; then user . item = (p_u . q_i) / (M |p_u|), a per-user positive rescaling.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from recsys.artifact import MeanPoolUserEncoder, l2_normalise, save_run
from recsys.data.schema import Dataset


class Factorisation(Protocol):
    name: str

    def user_vectors(self) -> np.ndarray: ...

    def item_vectors(self) -> np.ndarray: ...


def mips_to_unit(user_vectors: np.ndarray, item_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length (users, items) with one extra dimension whose dot products rank like the originals."""
    norms = np.linalg.norm(item_vectors, axis=1)
    m = float(norms.max(initial=0.0)) or 1.0
    extra = np.sqrt(np.clip(m * m - norms * norms, 0.0, None))[:, None]
    items = np.hstack([item_vectors, extra]) / m
    users = np.hstack([user_vectors, np.zeros((user_vectors.shape[0], 1), user_vectors.dtype)])
    return l2_normalise(users), l2_normalise(items)


def save_baseline_run(model: Factorisation, dataset: Dataset, train: pl.DataFrame, run_dir: Path,
                      split_strategy: str, model_version: str | None = None, dataset_ref: str | None = None) -> Path:
    """Save `model` (fitted on `train` of `dataset` split by `split_strategy`) as a run directory.

    `dataset_ref` is what run.json names as the dataset (default `dataset.name`; give a folder
    path for datasets that are not registered under RECSYS_DATA_DIR).
    """
    users, items = mips_to_unit(model.user_vectors(), model.item_vectors())
    popularity = np.bincount(train["item_index"].to_numpy(), minlength=dataset.n_items)
    item_table = dataset.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", popularity, dtype=pl.Int64))
    n_train = train.group_by("user_index").agg(pl.len().cast(pl.Int64).alias("n_train"))
    user_table = (dataset.interactions.select("user_id", "user_index").unique("user_index").sort("user_index")
                  .join(n_train, on="user_index", how="left").with_columns(pl.col("n_train").fill_null(0)))
    assert user_table.height == users.shape[0], f"model has {users.shape[0]} user rows for {user_table.height} users"
    settings = getattr(model, "config", None)
    config = {"baseline": model.name, "split_strategy": split_strategy,
              **(asdict(settings) if is_dataclass(settings) and not isinstance(settings, type) else {})}
    return save_run(Path(run_dir), model_version=model_version or f"{model.name}-{dataset.version[:8]}",
                    dataset=dataset_ref or dataset.name, data_version=dataset.version, config=config, items=item_table,
                    users=user_table, item_vectors=items, user_vectors=users,
                    user_encoder_payload={"kind": MeanPoolUserEncoder.kind, "kwargs": {}},
                    extra_meta={"split_strategy": split_strategy, "kind": f"baseline:{model.name}"})
