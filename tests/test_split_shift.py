"""The split diagnostic's valid-against-test check: one model's Recall@20 on both parts, paired per user."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.graph_cf_dataset import build
from benchmarks.split_shift import paired_recall
from recsys.data import load_dataset

GROUPS, GROUP_SIZE, USERS = 10, 10, 300


def _write(path: Path, rows: dict[int, list[int]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in rows.items() if items))
    return path


def _dataset(tmp_path: Path, shifted: bool):
    """Users of ten item groups, seven of their group's items in train. Each user holds out one more item of their
    own group (predictable from train) and one of another group (not). `shifted`: valid always gets the own-group
    item and test the other one; otherwise a coin decides, as a random partition of the held-out items would."""
    rng = np.random.default_rng(0)
    train, valid, test = {}, {}, {}
    for user in range(USERS):
        group = user % GROUPS
        own = rng.permutation(GROUP_SIZE)[:8] + group * GROUP_SIZE
        other_group = (group + 1 + rng.integers(GROUPS - 1)) % GROUPS
        other = int(other_group * GROUP_SIZE + rng.integers(GROUP_SIZE))
        train[user] = [int(i) for i in own[:7]]
        held = [int(own[7]), other]
        if not shifted and rng.random() < 0.5:
            held.reverse()
        valid[user], test[user] = [held[0]], [held[1]]
    out = build(_write(tmp_path / "train.txt", train), _write(tmp_path / "test.txt", test), tmp_path / "out",
                valid_path=_write(tmp_path / "valid.txt", valid))
    return load_dataset(str(out))


def test_a_random_partition_of_the_held_out_items_scores_alike_on_valid_and_test(tmp_path: Path) -> None:
    report = paired_recall("itemknn", _dataset(tmp_path, shifted=False))
    assert report["users"] == USERS
    assert abs(report["z"]) < 3  # one random partition: within noise (seeded, so the same figure every run)
    assert 0.3 < report["valid_recall@20"] < 0.8 and 0.3 < report["test_recall@20"] < 0.8


def test_a_valid_part_drawn_nearer_train_than_test_is_flagged(tmp_path: Path) -> None:
    report = paired_recall("itemknn", _dataset(tmp_path, shifted=True))
    assert report["valid_recall@20"] > 0.9  # the own-group item: ItemKNN finds it from the seven in train
    assert report["test_recall@20"] < 0.4
    assert report["difference"] > 0.5 and report["z"] > 10
