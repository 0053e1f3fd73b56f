"""Turn HetRec 2011's Last.fm listening data (`user_artists.dat`) into a generic folder dataset.

    git -C /work/.mirror/PPjamies+MusicApp-RecommenderSystem-FriendNetwork/repo show HEAD:user_artists.dat > /tmp/lastfm/user_artists.dat
    .venv/bin/python benchmarks/lastfm_dataset.py --source /tmp/lastfm/user_artists.dat --out artifacts/unseen/lastfm

Why: the generalisation target is checked on "a public dataset you do not have". Every unseen set so far
was derived from ML-100K or TikTok, or was Amazon-Baby; Last.fm (GroupLens' HetRec 2011 release: 1,892
users, 17,632 artists, 92,834 user-artist pairs, each user's 50 most played artists) differs in domain
(music), in catalogue size (over the closed-form member's `ease.max_items`) and in its long tail (most
artists have one listener). It has no timestamps, so it gets MMRec's random per-user 80/10/10 split, as
the other interaction-only sets do (`unseen_dataset.random_per_user_split`). Play counts are dropped:
implicit feedback, one event per (user, artist). Ids become shuffled opaque labels so no registered
name or config matches. The output lives outside the repository (licence: no redistribution).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.unseen_dataset import opaque_ids, random_per_user_split, write_folder  # noqa: E402

COLUMNS = ("userID", "artistID", "weight")


def read_user_artists(source: Path) -> pl.DataFrame:
    """The tab-separated `userID artistID weight` file; refuses any other header."""
    frame = pl.read_csv(source, separator="\t")
    if tuple(frame.columns) != COLUMNS:
        raise ValueError(f"{source}: expected the columns {', '.join(COLUMNS)}, found {', '.join(frame.columns)}")
    duplicates = frame.height - frame.unique(["userID", "artistID"]).height
    if duplicates:
        raise ValueError(f"{source}: {duplicates} (userID, artistID) pairs appear twice")
    return frame


def build(source: Path, out: Path, seed: int = 0) -> Path:
    """Write `items.csv` and `interactions.csv` (with a `split` column) to `out` and return it."""
    frame = read_user_artists(source)
    rng = np.random.default_rng(seed)
    inter = opaque_ids(frame, "userID", "artistID", rng).select("user_id", "item_id")
    inter = random_per_user_split(inter, rng, "user_id").sample(fraction=1.0, shuffle=True, seed=seed)
    return write_folder(inter.select("user_id", "item_id", "split"), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="HetRec 2011 Last.fm user_artists.dat")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = build(args.source, args.out, args.seed)
    frame = pl.read_csv(out / "interactions.csv")
    print(out, frame.height, "interactions", frame["user_id"].n_unique(), "users", frame["item_id"].n_unique(),
          "items", frame.group_by("split").len().sort("split").rows())


if __name__ == "__main__":
    main()
