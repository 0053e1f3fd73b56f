"""Several server processes (`recsys serve --workers N`) append to one exposure log and rotate it:
no record is lost, duplicated or torn, and the A/B report's reader finds every one of them.

Real processes (multiprocessing, spawn), the real `JsonlLog` writer, the real reader.
"""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from serving.exposure_log import EXPOSURES, JsonlLog
from training.ab.logs import log_parts

PROCESSES, RECORDS, CAP = 4, 2000, 200_000


def _write(log_dir: str, worker: int) -> None:
    # Batches of ~30 kB: larger than a file buffer, so a writer that let the buffer split a batch
    # into several writes would interleave (tear) lines with the other processes' writes.
    logs = JsonlLog(Path(log_dir), flush_ms=1, batch=64, max_bytes=CAP, keep_parts=10_000)
    for n in range(RECORDS):
        logs.write(EXPOSURES, {"exposure_id": f"{worker}-{n}", "user_id": str(n), "pad": "x" * (400 + n % 50)})
        if n % 64 == 0:
            logs.flush(timeout=30)
    assert logs.flush(timeout=60)
    logs.close()


def test_processes_sharing_one_rotating_log_lose_and_tear_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write, args=(str(tmp_path), worker)) for worker in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        assert process.exitcode == 0
    ids = []
    files = [path for _, path in log_parts(tmp_path, EXPOSURES)]
    assert len(files) > 10, "the cap must have forced many rotations"
    for path in files:
        for line in path.read_text().splitlines():
            ids.append(json.loads(line)["exposure_id"])  # a torn line would not parse
    assert len(ids) == len(set(ids)) == PROCESSES * RECORDS
    # each process checks the size before its own batch write, so up to one batch per process may straddle the cap
    assert all(path.stat().st_size <= CAP + PROCESSES * 64 * 500 for path in files)
