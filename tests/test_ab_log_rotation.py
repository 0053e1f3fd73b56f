"""exposures.jsonl is bounded: size-based rotation with a cap, and the report reads every rotated part.

Issue 15 ("exposures.jsonl is never rotated"): before, the active file grew without limit and the
report read only `exposures.jsonl`.
"""
from __future__ import annotations

import json

import polars as pl
import pytest

from serving.exposure_log import EVENTS, EXPOSURES, JsonlLog, exposure_record
from training.ab.logs import log_parts, read_experiment
from training.ab.online import analyse_online
from training.ab.simulate import SimulationConfig, write_logs


def _replay(src, dst, max_bytes: int, keep_parts: int) -> tuple[int, int]:
    """Re-write a simulated experiment's logs through the serving writer (with rotation)."""
    logs = JsonlLog(dst, flush_ms=5, batch=64, max_bytes=max_bytes, keep_parts=keep_parts)
    counts = []
    for name in (EXPOSURES, EVENTS):
        lines = (src / name).read_text().splitlines()
        for line in lines:
            logs.write(name, json.loads(line))
        counts.append(len(lines))
    assert logs.flush(timeout=60)
    logs.close()
    (dst / "experiment.json").write_text((src / "experiment.json").read_text())
    return counts[0], counts[1]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return write_logs(tmp_path_factory.mktemp("sim"), SimulationConfig(n_users=1_500, days=3.0), seed=4)


def test_active_file_and_parts_stay_under_the_cap(simulated, tmp_path):
    cap, keep = 20_000, 3
    n_exposures, _ = _replay(simulated, tmp_path, max_bytes=cap, keep_parts=keep)
    parts = log_parts(tmp_path, EXPOSURES)
    assert len(parts) == keep + 1  # `keep` rotated parts + the active file
    assert all(path.stat().st_size <= cap for _, path in parts)
    assert sum(path.stat().st_size for _, path in parts) <= (keep + 1) * cap
    assert parts[0][0] > 1  # older parts were deleted: total disk is bounded whatever the traffic
    logs = read_experiment(tmp_path)
    assert logs.exposures.height < n_exposures
    assert any("rotated parts 1-" in note and "missing" in note for note in logs.notes)
    assert any(w.code == "LOG_GAP" for w in analyse_online(tmp_path).warnings)


def test_report_reads_every_rotated_part_in_order(simulated, tmp_path):
    n_exposures, n_events = _replay(simulated, tmp_path, max_bytes=64_000, keep_parts=1_000)
    numbers = [n for n, _ in log_parts(tmp_path, EXPOSURES)]
    assert len(numbers) > 5 and numbers[:-1] == list(range(1, len(numbers))) and numbers[-1] is None
    logs = read_experiment(tmp_path)
    assert (logs.exposures.height, logs.events.height) == (n_exposures, n_events) and not logs.notes
    original = pl.read_ndjson(simulated / EXPOSURES)
    assert logs.exposures["exposure_id"].to_list() == original["exposure_id"].to_list()
    report = analyse_online(tmp_path)
    by_name = {v.name: v for v in report.variants}
    assert sum(v.details["exposures"] for v in by_name.values()) == n_exposures


def test_exposure_record_logs_deterministic_propensity_one_and_refuses_misaligned_lists():
    record = exposure_record("x1", 1.0, "u1", "A", "m1", ["i1", "i2"])
    assert record["propensities"] == [1.0, 1.0]
    explored = exposure_record("x2", 1.0, "u1", "A", "m1", ["i1", "i2"], propensities=[1.0, 0.25], teams=["A", "B"])
    assert explored["propensities"] == [1.0, 0.25] and explored["teams"] == ["A", "B"]
    with pytest.raises(ValueError, match="2 shown items"):
        exposure_record("x3", 1.0, "u1", "A", "m1", ["i1", "i2"], propensities=[0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        exposure_record("x4", 1.0, "u1", "A", "m1", ["i1"], propensities=[0.0])
