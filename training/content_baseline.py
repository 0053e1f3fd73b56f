"""The `content-only` baseline: the two-tower with items made of their content alone.

Why it exists: it answers "how much do ID embeddings and the interaction graph add over content?"
with the same code, split and harness as the full model. Items are their fused media projections
(plus the frozen content kNN smoothing and the popularity prior); there are no item-ID rows, no
history-item table and no LightGCN propagation, so an item's vector depends on its features only
and a user is the pooled content of their history.

    recsys evaluate --baseline content-only --dataset tiktok --split test --json

It reads `configs/<dataset>.toml` when there is one (so it shares the tuned dim, loss and
optimiser) and then forces the content-only switches (`CONTENT_ONLY`); `set=[...]` adds more
`section.key=value` overrides (tests use it to train for one epoch).
"""
from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import polars as pl

from recsys.baselines.registry import register_baseline
from recsys.data.schema import Dataset

CONTENT_ONLY = ("model.id_embedding=false", "model.history_embedding=false", "model.user_id_embedding=false",
                "model.propagation_layers=0", "model.id_dropout=0.0", "model.content_mode=fallback",
                "loss.content_weight=0.0")


class ContentOnlyTwoTower:
    """Baseline protocol (`fit`, `score`) around a two-tower trained without ID embeddings.

    Args:
        dataset: dataset name whose `configs/<name>.toml` to start from (None = defaults).
        set: extra config overrides, e.g. ["train.epochs=1"].
    Example::
        model = ContentOnlyTwoTower("tiktok").fit(ev.dataset, ev.train); scores = model.score(np.arange(5))
    """

    name = "content-only"

    def __init__(self, dataset: str | None = None, set: list[str] | tuple[str, ...] = ()):  # noqa: A002 (CLI word)
        self.dataset_name = dataset
        self.overrides = [*set, *CONTENT_ONLY]
        self.users: np.ndarray | None = None
        self.items: np.ndarray | None = None
        self.metrics: dict[str, Any] = {}

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "ContentOnlyTwoTower":
        """Train on `dataset`'s train rows (its `split` column is already applied), epoch chosen on valid."""
        from training.config import default_config_path, load_config
        from training.data import build_training_data
        from training.distributed import DistContext
        from training.run import build_task
        from training.trainer import Trainer

        name = self.dataset_name if self.dataset_name and default_config_path(self.dataset_name).exists() else None
        config = load_config(None, name, self.overrides)
        config.data.split = "predefined"  # the harness has split the dataset already
        if config.train.threads:
            import torch

            torch.set_num_threads(config.train.threads)
        data = build_training_data(config.data, dataset=dataset)
        task = build_task(config, data)
        with tempfile.TemporaryDirectory(prefix="content-only-") as tmp:
            trainer = Trainer(config, data, task, task, DistContext(), tmp, progress=False)
            state = trainer.fit(resume=False)
            output = trainer.tower_output()
        self.users, self.items = output.users.numpy(), output.items.numpy()
        self.metrics = {"best_epoch": state.best_epoch, "valid": state.best_metrics}
        return self

    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        assert self.users is not None and self.items is not None, "call fit() first"
        return (self.users[np.asarray(user_index_batch, dtype=np.int64)] @ self.items.T).astype(np.float32)


def content_only_factory(dataset: str | None = None, **overrides: Any) -> ContentOnlyTwoTower:
    return ContentOnlyTwoTower(dataset, **overrides)


register_baseline(ContentOnlyTwoTower.name, content_only_factory)
