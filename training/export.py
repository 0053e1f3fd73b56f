"""Write the run directory (the model artefact) through `recsys.artifact.save_run`, plus two extras:

- `item_media_vectors.npz`: per medium, every item's L2-normalised projection (zero rows where the
  item lacks the medium), read by the cross-media evaluation;
- `content_projection.pt`: the per-medium projection weights, so `recsys.models.project_content`
  can put a search query (encoder output) into the item space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys.artifact import l2_normalise, save_run
from recsys.models.serving import PROJECTION_FILE, encoder_payload, projection_payload
from recsys.models.task import TwoTowerTrainTask
from recsys.models.two_tower import TowerOutput
from training.config import TrainConfig
from training.data import TrainingData

MEDIA_VECTORS_FILE = "item_media_vectors.npz"
MODEL_KIND = "two_tower"


def _items_table(data: TrainingData) -> pl.DataFrame:
    counts = data.item_counts.numpy()
    return data.dataset.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", counts[data.dataset.items["item_index"].to_numpy()], dtype=pl.Int64))


def _users_table(data: TrainingData) -> pl.DataFrame:
    ids = data.dataset.interactions.select("user_index", "user_id").unique("user_index").sort("user_index")
    n_train = data.histories.lengths.numpy()
    return ids.with_columns(pl.Series("n_train", n_train[ids["user_index"].to_numpy()], dtype=pl.Int64))


def media_vectors(output: TowerOutput, data: TrainingData) -> dict[str, np.ndarray]:
    out = {}
    for j, medium in enumerate(data.catalog.media):
        vectors = l2_normalise(output.item_encoding.media[medium].detach().numpy())
        vectors[~data.catalog.present[:, j].numpy()] = 0.0
        out[medium] = vectors
    return out


def export_run(run_dir: Path, config: TrainConfig, data: TrainingData, task: TwoTowerTrainTask, output: TowerOutput,
               metrics: dict[str, Any], model_version: str | None = None) -> Path:
    """Save everything serving and evaluation read; returns the run directory."""
    run_dir = Path(run_dir)
    model = task.model
    tables = model.serving_tables(output, task.inputs.graphs)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(projection_payload(dict(model.item_tower.projections), config.model.projection_hidden, config.model.dim,
                                  pad=model.output_dim - config.model.dim),
               run_dir / PROJECTION_FILE)
    np.savez(run_dir / MEDIA_VECTORS_FILE, **media_vectors(output, data))
    version = model_version or f"{MODEL_KIND}-{data.dataset.name}-{config.fingerprint()[:8]}"
    # run.json names what `load_dataset` accepts: the registered name, or the folder's absolute path
    ref = config.data.dataset
    dataset_ref = data.dataset.name if ref == data.dataset.name or not Path(ref).exists() else str(Path(ref).resolve())
    resolved = config.model_dump(mode="json")
    resolved["split_strategy"] = data.split_strategy
    return save_run(
        run_dir, model_version=version, dataset=dataset_ref, data_version=data.dataset.version, config=resolved,
        items=_items_table(data), users=_users_table(data),
        item_vectors=output.items.detach().numpy(), user_vectors=output.users.detach().numpy(),
        user_encoder_payload=encoder_payload(config.model, model, tables), metrics=metrics,
        extra_meta={"model_kind": MODEL_KIND, "split_strategy": data.split_strategy, "encoders": data.content.encoders,
                    "cold_items": int((~data.warm).sum()), "temperature": float(model.temperature.detach()),
                    "media": list(data.catalog.media), "config_fingerprint": config.fingerprint()})
