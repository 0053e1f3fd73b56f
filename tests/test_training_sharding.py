"""A catalogue-sized ID table is split across ranks, not replicated: planned and trained with 2 CPU processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.distributed import ROW_WISE_MIN_ROWS, sharding_type_for

REPO = Path(__file__).resolve().parents[1]


def test_sharding_type_follows_table_size_and_device():
    assert sharding_type_for(6_710, 2) == "data_parallel"  # small tables: replicate, no all-to-all
    assert sharding_type_for(10_000_000, 1) == "data_parallel"  # one process: nothing to split
    assert sharding_type_for(10_000_000, 2, "cuda") == "row_wise"
    assert sharding_type_for(ROW_WISE_MIN_ROWS, 2, "cpu") == "column_wise"  # TorchRec's CPU kernels have no row-wise


@pytest.mark.slow
def test_ten_million_item_table_is_split_across_two_processes(tmp_path):
    rows, dim = 10_000_000, 16
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           str(REPO / "tests" / "support" / "sharded_table_job.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ROWS": str(rows), "DIM": str(dim), "OMP_NUM_THREADS": "1", "OUT_DIR": str(tmp_path),
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = sorted((json.loads(p.read_text()) for p in tmp_path.glob("rank-*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    plan = ranks[0]["plan"]["item_id_table"]
    assert plan["sharding_type"] == "column_wise"
    assert sorted(s["rank"] for s in plan["shards"]) == [0, 1]
    assert all(s["size"] == [rows, dim // 2] for s in plan["shards"])
    assert all(r["local_shard"] == [rows, dim // 2] for r in ranks)  # each process holds half the table
    assert ranks[0]["loss"] == pytest.approx(ranks[1]["loss"]) and ranks[0]["loss"] > 0
