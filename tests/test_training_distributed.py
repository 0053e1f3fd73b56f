"""`recsys train --nproc 2`: two CPU processes under torchrun, TorchRec DistributedModelParallel on gloo.

The ranks split every global batch, DDP averages the gradients, so both must end with identical
weights (the run records each rank's sha256 of its state dict) and, with the same global batch,
land close to the single-process run (not equal: in-batch negatives are per rank).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.artifact import load_run
from training.config import load_config
from training.run import train
from training_slices import write_test_config, write_tiktok_slice

ROOT = Path(__file__).resolve().parents[1]


def train_two_processes(root: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`recsys train --nproc 2` on the slice and config the `runs` fixture wrote under `root`."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    return subprocess.run([sys.executable, "-m", "commands.main", "train", "--nproc", "2", "--dataset",
                           str(root / "tiktok-slice"), "--config", str(root / "test.toml"), "--out", str(out),
                           "--no-progress", *sets],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("distributed")
    folder = write_tiktok_slice(root / "tiktok-slice")
    config = write_test_config(root / "test.toml")
    single = train(load_config(config, str(folder)), root / "single", resume=False, progress=False)
    out = train_two_processes(root, root / "two")
    return {"single": single.metrics, "proc": out, "two": root / "two", "single_dir": root / "single"}


def test_two_processes_train_with_dmp_and_agree(runs: dict) -> None:
    proc = runs["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((runs["two"] / "metrics.json").read_text())
    training = metrics["training"]
    assert training["world_size"] == 2 and training["wrapper"] == "DistributedModelParallel"
    digests = training["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], digests  # identical weights on both ranks
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    load_run(runs["two"])  # rank 0 wrote a complete run directory


def test_two_processes_land_close_to_one(runs: dict) -> None:
    two = json.loads((runs["two"] / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key, tolerance in (("recall@20", 0.02), ("ndcg@20", 0.01)):
            assert abs(two[split][key] - runs["single"][split][key]) < tolerance, (split, key, two[split][key],
                                                                                    runs["single"][split][key])
    assert two["test"]["recall@20"] > 0.03


def test_two_processes_train_the_sampled_step_with_dmp(runs: dict, tmp_path: Path) -> None:
    """The sampled step under DMP: each rank looks up its batch's ids only, and the ranks still agree."""
    out = train_two_processes(runs["single_dir"].parent, tmp_path / "two", "loss.step=sampled")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    digests = metrics["training"]["rank_weight_digests"]
    assert metrics["training"]["wrapper"] == "DistributedModelParallel"
    assert len(digests) == 2 and digests[0] == digests[1], digests
    assert metrics["test"]["recall@20"] > 0.03


def test_two_processes_fit_and_serve_the_closed_form_member(runs: dict, tmp_path: Path) -> None:
    """The closed-form member under torchrun: every rank fits the same EASE, rank 0 scores the candidates on
    valid and shares them, and the written run serves towers + member as one concatenation."""
    out = train_two_processes(runs["two"].parent, tmp_path / "member", "ease.weights=[1.0]")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "member" / "metrics.json").read_text())
    assert metrics["closed_form"]["weight"] == 1.0 and metrics["training"]["world_size"] == 2
    assert metrics["train_serve_max_abs_diff"] < 1e-4
    run = load_run(tmp_path / "member")
    assert run.meta["closed_form"]["rank"] == 16 and run.item_vectors.shape[1] == 2 * 17
