"""MovieLens-100K as GroupLens ships it (RecBole's atomic files of it: `recsys.data.recbole`).

The text medium of an item is "title (year). Genres: ...", which is what a text encoder sees.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.errors import ProblemLog
from recsys.data.schema import Dataset
from recsys.data.tables import ROW, assemble, cast_checked, read_delimited, require_columns

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def is_grouplens_layout(path: Path) -> bool:
    return (path / "u.data").exists()


def _interactions(frame: pl.DataFrame, file: Path, log: ProblemLog) -> pl.DataFrame:
    if not require_columns(frame, ["user_id", "item_id", "rating", "timestamp"], file, log):
        return frame.clear()
    frame = cast_checked(frame, "user_id", pl.String(), file, log)
    frame = cast_checked(frame, "item_id", pl.String(), file, log)
    frame = cast_checked(frame, "rating", pl.Float32(), file, log)
    frame = cast_checked(frame, "timestamp", pl.Int64(), file, log)
    return frame.with_columns(pl.lit("rating").alias("event_type"), pl.col("rating").alias("weight"))


def movie_text(title: pl.Expr, year: pl.Expr, genres: pl.Expr) -> pl.Expr:
    return pl.concat_str([title, pl.lit(" ("), year.fill_null("unknown year"), pl.lit("). Genres: "), genres],
                         ignore_nulls=True)


def load_grouplens(path: Path, name: str = "ml-100k") -> Dataset:
    """Official GroupLens files: `u.data` (tab), `u.item` (pipe, latin-1, 19 genre flags), `u.user` (pipe)."""
    log = ProblemLog()
    inter_file = path / "u.data"
    item_file = path / "u.item"
    inter = read_delimited(inter_file, "\t", columns=["user_id", "item_id", "rating", "timestamp"], has_header=False)
    inter = _interactions(inter, inter_file, log)
    item_columns = ["item_id", "title_year", "release_date", "video_release_date", "imdb_url", *GENRES]
    items = read_delimited(item_file, "|", columns=item_columns, has_header=False, encoding="utf8-lossy")
    items = cast_checked(items, "item_id", pl.String(), item_file, log)
    genre_names = pl.concat_str(
        [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in GENRES], separator=" ", ignore_nulls=True)
    year = pl.col("release_date").str.slice(-4)
    title = pl.col("title_year").str.replace(r"\s*\(\d{4}\)\s*$", "")
    items = items.with_columns(title.alias("title"), movie_text(title, year, genre_names).alias("text"))
    users = None
    if (path / "u.user").exists():
        users = read_delimited(path / "u.user", "|", columns=["user_id", "age", "gender", "occupation", "zip_code"],
                               has_header=False)
    return assemble(name, items.drop([c for c in items.columns if c in GENRES]), item_file, inter, inter_file, log,
                    users=users)
