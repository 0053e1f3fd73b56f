"""Write a dataset's split as RecBole atomic benchmark files, so RecBole runs on exactly our split.

RecBole reads pre-split data when its config says `benchmark_filename: [train, valid, test]`:
it then loads `<dir>/<name>.train.inter`, `.valid.inter` and `.test.inter` and skips its own
splitting. Each file is tab-separated with typed headers (`user_id:token`, `item_id:token`,
`timestamp:float`, and `rating:float` when the source has ratings), rows in source-file order.

Why: figures are only comparable when both libraries rank the same held-out items from the same
train data. Note RecBole masks train *and* valid items at test time; our harness masks train
items only (DiffMM's protocol), which BENCHMARKS.md reports beside it.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.schema import SPLITS, Dataset
from recsys.data.splits import SplitStrategy, TieBreak, apply_split

RECBOLE_CONFIG = "benchmark_filename: [train, valid, test]"


def recbole_frame(interactions: pl.DataFrame) -> pl.DataFrame:
    """Interactions as RecBole's typed atomic columns (`rating` only when the events are ratings)."""
    columns = [pl.col("user_id").alias("user_id:token"), pl.col("item_id").alias("item_id:token")]
    if interactions.height and (interactions["event_type"] == "rating").all():
        columns.append(pl.col("weight").cast(pl.Float64).alias("rating:float"))
    columns.append(pl.col("timestamp").cast(pl.Float64).alias("timestamp:float"))
    return interactions.select(columns)


def export_recbole(dataset: Dataset, out: Path, strategy: SplitStrategy | None = None,
                   tie_break: TieBreak = "file-order", name: str | None = None) -> dict[str, Path]:
    """Apply the split (the same `apply_split` training and evaluation use) and write the three files.

    Returns split -> file path. `name` (default: the dataset's name) is the RecBole dataset name,
    i.e. the file stem RecBole looks for under `data_path/<name>/`.
    """
    split = apply_split(dataset, strategy, tie_break)
    stem = name or dataset.name
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for part in SPLITS:
        path = out / f"{stem}.{part}.inter"
        recbole_frame(split.split(part)).write_csv(path, separator="\t", float_precision=None)
        files[part] = path
    return files
