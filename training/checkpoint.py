"""Per-epoch checkpoints, so a killed run continues where it stopped and ends with the same numbers.

A checkpoint holds the model and optimiser state, the epoch it completed, the best state so far
(early stopping exports that one) and the metric history. Randomness is re-seeded from
(seed, epoch) at each epoch start, so no RNG state needs saving for an exact resume.
Written atomically (temp file + rename): a kill during the write leaves the previous checkpoint.
Read weights-only (`recsys.artifact.load_tensors`): a planted checkpoint cannot run code on resume.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recsys.artifact import RunDirError, load_tensors

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


@dataclass
class TrainState:
    """Where training stands after `epoch` completed epochs."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = float("-inf")
    best_model: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_since_best: int = 0
    average: dict[str, Any] | None = None  # WeightAverage state (train.ema_decay > 0)


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def save_checkpoint(run_dir: Path, fingerprint: str, model: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    state: TrainState) -> Path:
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": fingerprint, "model": model, "optimizer": optimizer, "state": state.__dict__}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(run_dir: Path, fingerprint: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], TrainState] | None:
    """The saved (model, optimiser, state), or None if there is none.

    Raises ValueError if the checkpoint was made with a different config: resuming it would
    silently mix two experiments.
    """
    path = checkpoint_path(run_dir)
    if not path.exists():
        return None
    try:
        saved = load_tensors(path)
    except RunDirError as err:
        raise ValueError(f"{err}; delete the checkpoint or use another --out") from err
    if saved.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} was written by a different config (fingerprint {saved.get('fingerprint')} != "
                         f"{fingerprint}); use another --out or delete the checkpoint")
    return saved["model"], saved["optimizer"], TrainState(**saved["state"])
