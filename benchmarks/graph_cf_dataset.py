"""Turn a graph-CF benchmark split (LightGCN's or SELFRec's train/test text files) into a generic folder dataset.

    git -C /work/.mirror/geon0325+LightGCNpp/repo show HEAD:data/gowalla/train.txt > /tmp/gowalla/train.txt   # and valid.txt, test.txt
    .venv/bin/python benchmarks/graph_cf_dataset.py --train /tmp/gowalla/train.txt --valid /tmp/gowalla/valid.txt --test /tmp/gowalla/test.txt --out artifacts/unseen/gowalla

Why: the generalisation target is checked on "a public dataset you do not have" against "a LightGCN-class
model". The datasets the LightGCN family reports on (Gowalla, Yelp2018, Amazon-Book: NGCF's splits, which
LightGCN, SGL, SimGCL and LightGCN++ reuse) and SELFRec's (CiteULike, Amazon-Beauty) are the likeliest such
checks, and none was tuned on here. Two line formats exist:
- `adjacency` (LightGCN / NGCF): `user item item ...`, one line per user;
- `triples` (SELFRec): `user item weight`, one line per pair (the weight is dropped: implicit feedback).
- `sequences` (SELFRec's next-item sets, e.g. Amazon-Beauty as SASRec preprocessed it): `seq:item item ...` in
  time order, one line per user, and the test file `seq:item`, the item after it. The output then has no split
  column and the position in the sequence as its timestamp, so the recipe takes its next-item regime and its
  leave-last-out split gives test = exactly the published item, valid = the one before it.
The recipe chooses its epoch and settings on valid. LightGCN++ (geon0325/LightGCNpp) publishes a valid file
beside NGCF's train / test (its train + valid = NGCF's train), so `--valid FILE` takes that split as it is.
Without one, valid is carved from train: per user a seeded random `--valid-fraction` of the train items (at
least one, and only for users with 3 or more train items). Test stays exactly the published one. Ids become shuffled opaque
labels so no registered name or config matches. The output lives outside the repository (licence).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.unseen_dataset import opaque_ids, write_folder  # noqa: E402

FORMATS = ("adjacency", "triples", "sequences")
log = logging.getLogger("graph_cf_dataset")


def read_pairs(path: Path, line_format: str) -> pl.DataFrame:
    """`(user, item)` integer pairs of one file; a malformed line is refused with its number."""
    if line_format not in FORMATS:
        raise ValueError(f"unknown format {line_format!r}: one of {', '.join(FORMATS)}")
    users: list[int] = []
    items: list[int] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = [int(field) for field in fields] if line_format == "adjacency" else \
                    [int(fields[0]), int(fields[1])]
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{number}: expected {'user item item ...' if line_format == 'adjacency' else 'user item weight'}, "
                                 f"found {line.strip()[:80]!r}") from None
            if line_format == "triples" and len(fields) not in (2, 3):
                raise ValueError(f"{path}:{number}: expected 'user item weight', found {len(fields)} fields")
            users.extend([values[0]] * (len(values) - 1))
            items.extend(values[1:])
    pairs = pl.DataFrame({"user": users, "item": items}, schema={"user": pl.Int64, "item": pl.Int64})
    unique = pairs.unique(maintain_order=True)
    if unique.height < pairs.height:  # implicit feedback: one event per pair (SELFRec's CiteULike repeats 23)
        log.warning("%s: %d repeated (user, item) pairs, each kept once", path, pairs.height - unique.height)
    return unique


def read_sequences(path: Path, start: dict[str, int] | None = None) -> pl.DataFrame:
    """`(user, item, timestamp)` rows of a `seq:item item ...` file, the timestamp being the position in the user's
    sequence, counted on from `start[user]` (a test file continues its train sequence); a malformed line is
    refused with its number."""
    users: list[str] = []
    items: list[int] = []
    stamps: list[int] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            user, colon, rest = line.strip().partition(":")
            try:
                sequence = [int(field) for field in rest.split()]
            except ValueError:
                sequence = []
            if not colon or not user or not sequence:
                raise ValueError(f"{path}:{number}: expected 'sequence_id:item item ...', found {line.strip()[:80]!r}")
            offset = 0 if start is None else start.get(user, -1)
            if offset < 0:
                raise ValueError(f"{path}:{number}: sequence {user!r} has no train sequence to continue")
            users.extend([user] * len(sequence))
            items.extend(sequence)
            stamps.extend(range(offset, offset + len(sequence)))
    return pl.DataFrame({"user": users, "item": items, "timestamp": stamps},
                        schema={"user": pl.String, "item": pl.Int64, "timestamp": pl.Int64})


def build_sequences(train_path: Path, test_path: Path, out: Path, seed: int = 0) -> Path:
    """The `sequences` format: events with their order as timestamps and no split column (leave-last-out)."""
    train = read_sequences(train_path)
    lengths = dict(train.group_by("user").len().iter_rows())
    test = read_sequences(test_path, start=lengths)
    inter = pl.concat([train, test])
    repeated = inter.height - inter.unique(["user", "item"]).height
    if repeated:  # the harness masks a user's earlier items, so a repeated test item could never be ranked
        raise ValueError(f"{test_path.parent}: {repeated} repeated (user, item) events")
    inter = opaque_ids(inter, "user", "item", np.random.default_rng(seed)).select("user_id", "item_id", "timestamp")
    return write_folder(inter.sample(fraction=1.0, shuffle=True, seed=seed), out)


def carve_valid(train: pl.DataFrame, rng: np.random.Generator, fraction: float) -> pl.DataFrame:
    """A `split` column over train pairs: per user a random `fraction` (rounded, >= 1) becomes valid."""
    train = train.with_columns(pl.Series("_r", rng.random(train.height)))
    train = train.with_columns(pl.col("_r").rank("ordinal").over("user").alias("_pos"), pl.len().over("user").alias("_n"))
    quota = pl.max_horizontal((pl.col("_n") * fraction).round(0), pl.lit(1))
    valid = (pl.col("_n") >= 3) & (pl.col("_pos") <= quota)
    return train.with_columns(pl.when(valid).then(pl.lit("valid")).otherwise(pl.lit("train")).alias("split")) \
        .drop("_r", "_pos", "_n")


def build(train_path: Path, test_path: Path, out: Path, line_format: str = "adjacency",
          valid_fraction: float = 0.1, seed: int = 0, valid_path: Path | None = None) -> Path:
    """Write `items.csv` and `interactions.csv` (with a `split` column; `sequences`: timestamps instead) to `out`."""
    if line_format == "sequences":
        if valid_path is not None:
            raise ValueError("--format sequences: valid is each user's second-to-last item (leave-last-out); "
                             "there is no --valid file")
        return build_sequences(train_path, test_path, out, seed)
    train = read_pairs(train_path, line_format)
    test = read_pairs(test_path, line_format)
    rng = np.random.default_rng(seed)
    if valid_path is None:
        labelled = carve_valid(train, rng, valid_fraction)
    else:
        valid = read_pairs(valid_path, line_format)
        labelled = pl.concat([train.with_columns(pl.lit("train").alias("split")),
                              valid.with_columns(pl.lit("valid").alias("split"))])
    inter = pl.concat([labelled, test.with_columns(pl.lit("test").alias("split"))])
    repeated = inter.height - inter.unique(["user", "item"]).height
    if repeated:
        raise ValueError(f"{test_path.parent}: {repeated} (user, item) pairs appear in more than one split")
    inter = opaque_ids(inter, "user", "item", rng).select("user_id", "item_id", "split")
    return write_folder(inter.sample(fraction=1.0, shuffle=True, seed=seed), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--valid", type=Path, help="the published valid split; carved from train when absent")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", choices=FORMATS, default="adjacency")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = build(args.train, args.test, args.out, args.format, args.valid_fraction, args.seed, args.valid)
    frame = pl.read_csv(out / "interactions.csv")
    print(out, frame.height, "interactions", frame["user_id"].n_unique(), "users", frame["item_id"].n_unique(),
          "items", frame.group_by("split").len().sort("split").rows() if "split" in frame.columns else "leave-last-out")


if __name__ == "__main__":
    main()
