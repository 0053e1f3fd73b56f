"""TikTok micro-video dataset (DiffMM split): Parquet interactions with a predefined split and
per-medium `.npy` feature matrices (row i = item i).

The source has no timestamps; `timestamp` becomes the file's row order (flagged as synthetic).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.errors import ProblemLog
from recsys.data.schema import MEDIA, Dataset
from recsys.data.tables import ROW, assemble, cast_checked, require_columns


def is_tiktok_layout(path: Path) -> bool:
    return (path / "interactions.parquet").exists() and any(path.glob("*_feat.npy"))


def load_feature_files(path: Path, log: ProblemLog) -> dict[str, tuple[np.ndarray, Path]]:
    features: dict[str, tuple[np.ndarray, Path]] = {}
    for medium in MEDIA:
        file = path / f"{medium}_feat.npy"
        if not file.exists():
            continue
        try:
            features[medium] = (np.load(file, allow_pickle=False), file)
        except ValueError as exc:  # object arrays (ragged rows) need pickle; we never load pickles
            log.add(file, None, medium, f"cannot be read as a numeric matrix ({exc}); ragged vectors?")
    return features


def load_tiktok(path: Path, name: str = "tiktok") -> Dataset:
    log = ProblemLog()
    inter_file = path / "interactions.parquet"
    inter = pl.read_parquet(inter_file).with_row_index(ROW, offset=1)
    features = load_feature_files(path, log)
    require_columns(inter, ["user_id", "item_id", "split"], inter_file, log)
    for column in ("user_id", "item_id", "split"):
        if column in inter.columns:
            inter = cast_checked(inter, column, pl.String(), inter_file, log)
    inter = inter.with_columns(pl.col(ROW).cast(pl.Int64).alias("timestamp"))
    n_items = max((a.shape[0] for a, _ in features.values() if a.ndim == 2), default=0)
    if not features:
        log.add(path, None, None, "no <medium>_feat.npy feature files found")
    # Items are implicit: every row of the feature matrices is item i.
    items = pl.DataFrame({"item_id": [str(i) for i in range(n_items)]}).with_row_index(ROW, offset=1)
    return assemble(name, items, path / "image_feat.npy", inter, inter_file, log, features=features,
                    timestamps_synthetic=True)
