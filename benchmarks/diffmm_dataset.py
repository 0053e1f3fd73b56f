"""Turn one of DiffMM's published splits (scipy sparse matrices, pickled) into a generic folder dataset.

    git -C /work/.mirror/HKUDS+DiffMM/repo show HEAD:Datasets/baby/trnMat.pkl > /tmp/baby/trnMat.pkl   # and valMat, tstMat
    .venv/bin/python benchmarks/diffmm_dataset.py --pickles /tmp/baby --out artifacts/unseen/amazon-baby

Why: the generalisation target is checked on "a public dataset you do not have"; the issue's own table
names an Amazon review dataset (interactions only). HKUDS/DiffMM's repository carries the Amazon-Baby
split its paper reports (19,445 users, 7,050 items; train / valid / test 118,551 / 21,682 / 20,559), so
the no-config recipe can meet that shape of data without anyone having tuned on it. Only the
interactions are used (the repository's Baby media files are too large for its mirror).

Pickles can run code when loaded, so the loader accepts exactly the classes a scipy COO matrix
pickles to and refuses anything else. The output (`items.csv`, `interactions.csv` with a `split`
column, opaque ids) is read by `recsys.data.tabular`; it lives outside the repository (licence).
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.unseen_dataset import write_folder  # noqa: E402

SPLIT_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
_ALLOWED = {("scipy.sparse.coo", "coo_matrix"), ("scipy.sparse._coo", "coo_matrix"),
            ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct")}


class _MatrixOnly(pickle.Unpickler):
    """Unpickles a scipy COO matrix and nothing else (no arbitrary callables)."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only a scipy COO matrix may be loaded")
        if module == "scipy.sparse.coo":  # the deprecated alias the files were written with
            module = "scipy.sparse"
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    with path.open("rb") as handle:
        matrix = _MatrixOnly(handle).load()
    return np.asarray(matrix.row), np.asarray(matrix.col), tuple(matrix.shape)


def build(pickles: Path, out: Path, seed: int = 0) -> Path:
    """Write the folder dataset; ids are shuffled opaque labels so no registered name or config matches."""
    parts, shape = [], None
    for split, name in SPLIT_FILES.items():
        rows, cols, this_shape = read_split(pickles / name)
        if shape is not None and this_shape != shape:
            raise ValueError(f"{pickles / name}: shape {this_shape} differs from {shape}")
        shape = this_shape
        parts.append((rows.astype(np.int64), cols.astype(np.int64), split))
    rng = np.random.default_rng(seed)
    user_label = rng.permutation(shape[0])
    item_label = rng.permutation(shape[1])
    inter = pl.concat([pl.DataFrame({"user_id": [f"u{x}" for x in user_label[rows]],
                                     "item_id": [f"i{x}" for x in item_label[cols]], "split": split})
                       for rows, cols, split in parts])
    duplicates = inter.height - inter.unique(["user_id", "item_id"]).height
    if duplicates:
        raise ValueError(f"{pickles}: {duplicates} (user, item) pairs appear in more than one split")
    return write_folder(inter.select("user_id", "item_id", "split"), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pickles", type=Path, required=True, help="folder with trnMat.pkl, valMat.pkl, tstMat.pkl")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = build(args.pickles, args.out)
    frame = pl.read_csv(out / "interactions.csv")
    print(out, frame.group_by("split").len().sort("split").rows(), frame["user_id"].n_unique(),
          frame["item_id"].n_unique())


if __name__ == "__main__":
    main()
