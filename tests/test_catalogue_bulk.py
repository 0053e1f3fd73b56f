"""`recsys items add --run RUN --from FOLDER`: bulk add through the same encoders and log as the API,
with a per-item failure report, and resumable (a second run adds nothing twice)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.catalogue_runs import tiktok_content_run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.main", "items", "add", *args, "--no-progress"], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def test_bulk_add_reports_failures_per_item_and_resumes(tmp_path, monkeypatch):
    from recsys.data.registry import load_dataset
    from serving.retriever import Retriever

    run = tiktok_content_run(tmp_path / "run")
    ds = load_dataset("tiktok")
    folder = tmp_path / "new-items"
    folder.mkdir()
    rows = [("bulk-1", "first", ""), ("bulk-2", "second", ""), ("bulk-3", "third", ""), ("bulk-nan", "nan", ""),
            ("", "no id", ""), ("bulk-missing", "missing file", "gone.png")]
    with open(folder / "items.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "image_uri"])
        writer.writerows(rows)
    for medium in ("image", "audio"):
        matrix = np.asarray(ds.item_features[medium][[10, 20, 30, 40, 50, 60]], np.float32)
        matrix[3] = np.nan  # bulk-nan has no usable vector at all
        np.save(folder / f"{medium}_feat.npy", matrix)
    env = {"RECSYS_STORE_DIR": str(tmp_path / "store"), "RECSYS_DATA_DIR": os.environ.get("RECSYS_DATA_DIR", ""),
           "PYTHONPATH": str(REPO)}
    report = tmp_path / "failures.csv"
    first = _cli("--run", str(run), "--from", str(folder), "--report", str(report), env=env)
    assert first.returncode == 0, first.stderr
    assert "3 added, 0 already there, 3 failed" in first.stderr, first.stderr
    failures = {r["item_id"]: r for r in csv.DictReader(open(report))}
    assert set(failures) == {"bulk-nan", "", "bulk-missing"}
    assert "at least one medium" in failures["bulk-nan"]["reason"]
    assert "empty item_id" in failures[""]["reason"] and "row 5" in failures[""]["file"]
    assert "gone.png" in failures["bulk-missing"]["reason"]

    again = _cli("--run", str(run), "--from", str(folder), "--report", str(report), env=env)
    assert again.returncode == 0 and "0 added, 3 already there" in again.stderr, again.stderr

    from recsys.config import get_settings

    monkeypatch.setenv("RECSYS_STORE_DIR", env["RECSYS_STORE_DIR"])
    get_settings.cache_clear()
    try:
        served = Retriever.load(run)  # what a (re)started server sees
    finally:
        monkeypatch.delenv("RECSYS_STORE_DIR")
        get_settings.cache_clear()
    for item_id, twin in (("bulk-1", 10), ("bulk-2", 20), ("bulk-3", 30)):
        index = served.lookup(item_id)
        assert index is not None and index >= served.n_items
        hits = served.search(served.item_vector(index), 2, exclude=np.array([index]))
        assert served.item_id(int(hits.indexes[0])) == str(twin)
