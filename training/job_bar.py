"""The one progress bar of a training job (towers x epochs), with an ETA that survives a resume.

Why: a resumed job used to start its bar at 0, so it counted the epochs already on disk as still to
come and its ETA overstated the rest of the job. Here each tower's finished epochs are counted once,
as done before this invocation (tqdm's `initial`): they fill the bar but not its rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class JobBar(tqdm):  # type: ignore[misc]  # tqdm has no type hints
    """A tqdm bar that remembers how many epochs of each tower (by its run directory) it has counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tower_epochs: dict[Path, int] = {}

    def resumed(self, tower: Path, epochs_done: int) -> None:
        """`tower` continues after `epochs_done` epochs: count the ones this bar has not seen, as prior work."""
        new = epochs_done - self.tower_epochs.get(tower, 0)
        if new > 0 and not self.disable:
            self.initial += new
            self.n += new
            self.last_print_n = self.n
            self.refresh()
        self.tower_epochs[tower] = max(epochs_done, self.tower_epochs.get(tower, 0))

    def epoch_done(self, tower: Path) -> None:
        """One epoch of `tower` trained in this invocation."""
        self.tower_epochs[tower] = self.tower_epochs.get(tower, 0) + 1
        self.update(1)
