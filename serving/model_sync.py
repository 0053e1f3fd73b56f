"""A model switch reaches every worker of `recsys serve --workers N`.

`POST /admin/model` lands on one worker. That worker loads and swaps the run as before, then
announces it in a small file shared by the workers of this server (``models.json`` in the
folder the supervisor made for them, `ServingSettings.worker_dir`): variant -> run directory and
a sequence number. Every worker polls the file (a `stat` per poll while nothing changes) and
switches to any announcement newer than the last one it applied, through the same
`LiveModels.switch` (load off the event loop, atomic swap). A worker started later (uvicorn
replacing a dead one) applies the announcements at its first poll, so it serves what the others
serve. The latest announcement wins: two switches of one variant through two workers converge on
the one announced last.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class SharedModels:
    """The announcements file of one server's workers.

    Args:
        directory: the folder shared by this server's workers (made by the supervisor).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "models.json"
        self.applied: dict[str, int] = {}  # variant -> sequence number this process serves
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._entries: dict[str, dict] = {}

    def read(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def announce(self, variant: str, run_dir: Path) -> int:
        """Record that `variant` now serves `run_dir` (this process has switched); returns its number."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".models.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.read()
            seq = max((int(e["seq"]) for e in entries.values()), default=0) + 1
            entries[variant] = {"run_dir": str(run_dir), "seq": seq}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(entries))
            tmp.replace(self.path)
        self.applied[variant] = seq
        return seq

    def pending(self) -> list[tuple[str, Path, int]]:
        """Announcements newer than what this process applied: (variant, run_dir, seq)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if (stat.st_mtime_ns, stat.st_size) != self._seen:
            try:
                self._entries = self.read()
            except (OSError, ValueError) as err:  # replaced between stat and read: next poll
                log.debug("models file unreadable now (%s)", err)
                return []
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return [(variant, Path(e["run_dir"]), int(e["seq"])) for variant, e in sorted(self._entries.items())
                if int(e["seq"]) > self.applied.get(variant, 0)]


async def follow_models(models, shared: SharedModels, every_s: float) -> None:  # noqa: ANN001 - LiveModels
    """Switch this worker to what another worker announced (see the module docstring)."""
    from recsys.artifact import RunDirError  # noqa: PLC0415
    from serving.versions import SwitchInProgress  # noqa: PLC0415

    while True:
        await asyncio.sleep(every_s)
        for variant, run_dir, seq in shared.pending():
            if variant not in models.variants:
                shared.applied[variant] = seq
                continue
            if Path(models.get(variant).run.run_dir).resolve() == run_dir.resolve():
                shared.applied[variant] = seq  # already serving it (e.g. the worker that announced)
                continue
            try:
                await models.switch(variant, run_dir, announce=False)
            except SwitchInProgress:
                continue  # this worker is loading another switch: try again at the next poll
            except (RunDirError, OSError) as err:
                log.warning("variant %s: could not follow the switch to %s announced by another worker: %s",
                            variant, run_dir, err)
            except Exception as err:  # noqa: BLE001 - the follower must keep following
                log.warning("variant %s: switch to %s failed (%s: %s)", variant, run_dir, err.__class__.__name__, err)
            else:
                log.info("variant %s: followed the switch to %s announced by another worker", variant, run_dir)
            shared.applied[variant] = max(seq, shared.applied.get(variant, 0))
