"""Small real slices of the shared datasets for the training tests (not a test module).

A slice keeps every k-th TikTok user (users are ordered by activity) with all their interactions and their split (the
published DiffMM one), renumbers the items they touch and cuts the image/audio feature rows to
match, in the TikTok layout `load_dataset(folder)` reads. Real data, small enough that one epoch
takes well under a second on a shared 2-core machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import get_settings

# Small model and short schedule: what the tests train with (seeded, one torch thread).
TEST_CONFIG = """
[data]
split = "predefined"

[model]
dim = 16
item_knn = 5
propagation_layers = 2
id_dropout = 0.1
content_mode = "fallback"
history_embedding = false

[loss]
kind = "softmax"
logq_correction = 3.0

[train]
epochs = 3
batch_size = 512
lr = 0.01
weight_decay = 1e-3
patience = 10
threads = 1
seed = 0
"""


def write_tiktok_slice(folder: Path, every: int = 8) -> Path:
    """Write every `every`-th TikTok user (interactions.parquet, image/audio_feat.npy) to `folder`."""
    source = get_settings().data_dir / "tiktok"
    inter = pl.read_parquet(source / "interactions.parquet").filter(pl.col("user_id") % every == 0)
    items = np.unique(inter["item_id"].to_numpy())
    remap = pl.DataFrame({"item_id": items.astype(np.int32), "new": np.arange(len(items), dtype=np.int32)})
    inter = (inter.join(remap, on="item_id").drop("item_id").rename({"new": "item_id"})
             .select((pl.col("user_id") // every).cast(pl.Int32), pl.col("item_id").cast(pl.Int32), pl.col("split").cast(pl.String)))
    folder.mkdir(parents=True, exist_ok=True)
    inter.write_parquet(folder / "interactions.parquet")
    for medium in ("image", "audio"):
        np.save(folder / f"{medium}_feat.npy", np.load(source / f"{medium}_feat.npy")[items])
    return folder


def write_test_config(path: Path, extra: str = "") -> Path:
    path.write_text(TEST_CONFIG + extra)
    return path
