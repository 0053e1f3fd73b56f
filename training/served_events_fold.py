"""The next training run learns from the feed: accepted events (`feature_store.served_events`) folded into the
interactions it trains on, after the live-catalogue log (`training.catalogue_fold`), so a click on an item
added live makes that item warm in the retrained run.

Read from where the server flushes them (`recsys.config.Settings.served_events_root`: `RECSYS_SERVE_EVENTS_DIR`,
else `<RECSYS_STORE_DIR>/offline`; then `<dataset>/<data version>/serving_events`), under the key the server
files them by: the run's dataset reference and the dataset's own version.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from feature_store.served_events import (ServedEventsFold, events_digest, events_folder, fold_served_events,
                                         read_events, read_events_folder)
from recsys.data import Dataset
from training.evaluation_protocol import EvaluationError

log = logging.getLogger(__name__)


def dataset_reference(ref: str, ds: Dataset) -> str:
    """What a run names its dataset by (run.json `dataset`, and the key the server files its events under):
    the registered name, or the folder's absolute path."""
    return ds.name if ref == ds.name or not Path(ref).exists() else str(Path(ref).resolve())


def fold_events(ds: Dataset, root: Path, reference: str,
                data_version: str) -> tuple[Dataset, ServedEventsFold | None]:
    """`ds` with every served event under `root` (the served-events root) of `reference` / `data_version` folded
    in; None when there are none."""
    events = read_events(root, reference, data_version)
    if not events.height:
        return ds, None
    folded, fold = fold_served_events(ds, events, str(events_folder(root, reference, data_version).resolve()))
    if os.environ.get("RANK", "0") == "0":  # once under torchrun
        log.info("%s", fold.summary())
    return folded, fold


def fold_recorded_events(ds: Dataset, recorded: dict[str, Any] | None) -> Dataset:
    """The dataset as a run recorded training on it: the same prefix of the same served events (evaluation).

    Refuses (EvaluationError: the CLI's one-line error) when those events are gone or changed: the run's users, masks and held-out events
    would no longer be the ones it was trained and selected on."""
    if not isinstance(recorded, dict) or not recorded.get("events"):
        return ds
    folder = Path(str(recorded.get("folder", "")))
    events = read_events_folder(folder).head(int(recorded["events"])) if folder.is_dir() else None
    if events is None or events.height != int(recorded["events"]) or events_digest(events) != recorded.get("digest"):
        raise EvaluationError(f"the run was trained with {recorded['events']} served events of {folder}, which "
                         f"{'are gone' if events is None else 'no longer start with them'}: cannot evaluate it on "
                         "the data it was trained on")
    folded, _ = fold_served_events(ds, events, str(folder))
    return folded
