"""One `recsys train` per run directory at a time.

Why: two jobs started with the same `--out` (a script run twice, a retry while the first is still
alive) both resume the same checkpoints and overwrite each other's epochs, pilot decisions and
exported files: the run ends as a mix of two trainings that no config describes. The second job is
refused at once instead, naming the process that holds the directory.
"""
from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".train.lock"


class RunBusyError(ValueError):
    """Another live process is training into this run directory."""


@contextmanager
def exclusive_run(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on RUN_DIR/.train.lock while the block runs; refuse if another process holds it.

    `flock` is released by the kernel when its holder dies (kill -9 included), so a crashed job never
    leaves a stale lock behind: the next `recsys train` resumes as before.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunBusyError(f"{run_dir} is being trained by {holder}: wait for that job to finish, or train "
                               "into another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
