"""The training job's bar counts a resumed tower's finished epochs once, as work done before this invocation."""
from __future__ import annotations

import io
from pathlib import Path

from training.job_bar import JobBar


def test_a_resumed_tower_fills_the_bar_once_without_entering_its_rate() -> None:
    bar = JobBar(total=40, file=io.StringIO(), mininterval=0)
    bar.resumed(Path("pilot/0"), 3)  # on disk from an earlier invocation
    assert (bar.n, bar.initial) == (3, 3)
    bar.epoch_done(Path("pilot/0"))
    bar.resumed(Path("pilot/0"), 4)  # the pilot's leader continuing in this process: already counted
    assert bar.n == 4
    bar.resumed(Path("members/1"), 2)
    assert (bar.n, bar.initial) == (6, 5)
    assert bar.n - bar.initial == 1  # the rate (and so the ETA) reads only the epoch trained here
    bar.close()


def test_a_disabled_bar_still_tracks_towers() -> None:
    bar = JobBar(total=10, disable=True)
    bar.resumed(Path("t"), 3)
    bar.epoch_done(Path("t"))
    assert bar.tower_epochs == {Path("t"): 4}
