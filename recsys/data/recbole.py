"""RecBole's atomic files, of any dataset: one `<name>.inter`, or RecBole's benchmark split `<name>.train.inter`,
`<name>.valid.inter`, `<name>.test.inter` (what `recsys data export --format recbole` writes), with an optional
`<name>.item` and `<name>.user`.

Why a generic reader: RecBole's atomic files are how many public datasets are passed around (its own dataset
collection: MovieLens, Amazon, Yelp, Gowalla, ...), so a dataset nobody wrote a loader for should load from them
as they are. Headers are typed (`user_id:token`); the type is dropped. `user_id` and `item_id` are required;
`timestamp` is optional (without it the file order is the time order, as for the items/interactions layout) and
so is `rating` (kept as the event weight). Without a `.item` file the items are those the interactions name.
A benchmark split becomes the `split` column, so `recsys train` trains on exactly that split.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.errors import DataProblem, DataValidationError, ProblemLog
from recsys.data.movielens import movie_text
from recsys.data.schema import Dataset
from recsys.data.tables import ROW, assemble, cast_checked, read_delimited, require_columns

SPLITS = ("train", "valid", "test")
# `.item` columns read as the item's title, then as its categories (the text medium is "title. Categories: ...").
TITLE_COLUMNS = ("movie_title", "title", "name", "item_name")
CATEGORY_COLUMNS = ("categories", "genre", "genres", "category")


def is_recbole_layout(path: Path) -> bool:
    return any(path.glob("*.inter"))


def _untyped(frame: pl.DataFrame) -> pl.DataFrame:
    """`user_id:token` -> `user_id` (RecBole's typed headers)."""
    return frame.rename({c: c.split(":")[0] for c in frame.columns})


def interaction_files(path: Path) -> list[tuple[Path, str | None]]:
    """The `.inter` file(s) to read, each with the split it holds (None: a single file, no split).

    Raises DataValidationError for an incomplete benchmark split or several unsplit `.inter` files.
    """
    benchmark = {split: sorted(path.glob(f"*.{split}.inter")) for split in SPLITS}
    if any(benchmark.values()):
        wrong = {split: files for split, files in benchmark.items() if len(files) != 1}
        if wrong:
            found = ", ".join(f.name for files in benchmark.values() for f in files)
            raise DataValidationError([DataProblem(str(path), None, None, (
                f"a RecBole benchmark split needs exactly one .train.inter, .valid.inter and .test.inter (found: {found})"))])
        return [(benchmark[split][0], split) for split in SPLITS]
    named = path / f"{path.name}.inter"
    files = [named] if named.exists() else sorted(path.glob("*.inter"))
    if len(files) > 1:
        raise DataValidationError([DataProblem(str(path), None, None, (
            f"several .inter files and none named {path.name}.inter: {', '.join(f.name for f in files)}"))])
    return [(files[0], None)]


def _interactions(file: Path, split: str | None, log: ProblemLog) -> pl.DataFrame:
    frame = _untyped(read_delimited(file, "\t"))
    if not require_columns(frame, ["user_id", "item_id"], file, log):
        return pl.DataFrame()
    frame = cast_checked(frame, "user_id", pl.String(), file, log)
    frame = cast_checked(frame, "item_id", pl.String(), file, log)
    if "timestamp" in frame.columns:
        frame = cast_checked(frame, "timestamp", pl.Int64(), file, log)
    if "rating" in frame.columns:
        frame = cast_checked(frame, "rating", pl.Float32(), file, log)
        frame = frame.with_columns(pl.lit("rating").alias("event_type"), pl.col("rating").alias("weight"))
    if split is not None:
        frame = frame.with_columns(pl.lit(split).alias("split"))
    return frame.select([c for c in (ROW, "user_id", "item_id", "timestamp", "event_type", "weight", "split")
                         if c in frame.columns])


def _items(item_file: Path, inter: pl.DataFrame, log: ProblemLog) -> pl.DataFrame:
    """The `.item` table with a title and a text medium where it has them; else the items the interactions name."""
    if not item_file.exists():
        first_seen = inter.group_by("item_id").agg(pl.col(ROW).min()).sort(ROW)
        return first_seen.select(pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(ROW), "item_id")
    items = _untyped(read_delimited(item_file, "\t"))
    if not require_columns(items, ["item_id"], item_file, log):
        return items
    items = cast_checked(items, "item_id", pl.String(), item_file, log)
    title = next((c for c in TITLE_COLUMNS if c in items.columns), None)
    if title == "movie_title":  # MovieLens: "title (year). Genres: ..."
        year = pl.col("release_year") if "release_year" in items.columns else pl.lit(None, pl.String)
        genres = pl.col("class") if "class" in items.columns else pl.lit("")
        return items.with_columns(pl.col(title).alias("title"), movie_text(pl.col(title), year, genres).alias("text"))
    if title is not None:
        categories = next((c for c in CATEGORY_COLUMNS if c in items.columns), None)
        text = pl.col(title) if categories is None else pl.concat_str(
            [pl.col(title), pl.lit(". Categories: "), pl.col(categories)], ignore_nulls=True)
        items = items.with_columns(pl.col(title).alias("title"), text.alias("text"))
    return items


def load_recbole(path: Path, name: str | None = None) -> Dataset:
    """Load a folder of RecBole atomic files (see the module docstring); every problem reported in one error."""
    log = ProblemLog()
    files = interaction_files(path)
    parts = [_interactions(file, split, log) for file, split in files]
    if any(ROW not in part.columns for part in parts):  # an id column is missing: nothing below can run
        log.raise_if_any()
    # one row order across the files (train, valid, test): user order and file-order ties follow it
    inter = pl.concat(parts, how="diagonal_relaxed").with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).alias(ROW))
    timestamps_synthetic = "timestamp" not in inter.columns
    if timestamps_synthetic:  # the file order is the time order (said by `recsys data validate`)
        inter = inter.with_columns(pl.col(ROW).cast(pl.Int64).alias("timestamp"))
    first, split = files[0]
    stem = first.name.removesuffix(".inter").removesuffix(f".{split}" if split else "")
    inter_label: Path | str = first if len(files) == 1 else \
        path / f"{stem}.{{train,valid,test}}.inter (rows counted across the three)"
    item_file = path / f"{stem}.item"
    items = _items(item_file, inter, log)
    users = None
    user_file = path / f"{stem}.user"
    if user_file.exists():
        users = _untyped(read_delimited(user_file, "\t"))
    return assemble(name or path.name, items, item_file, inter, inter_label, log, users=users,
                    timestamps_synthetic=timestamps_synthetic)
