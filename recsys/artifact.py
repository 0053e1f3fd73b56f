"""The run directory: the one artefact that training writes and evaluation and serving read.

Layout (all written by `save_run`, checked by `load_run`):

    RUN_DIR/
      run.json            model_version, dataset, data_version, created_at, model kind
      config.toml         the fully resolved training config
      items.parquet       item_id, item_index, media, title, popularity (train interactions)
      users.parquet       user_id, user_index, n_train (known users at training time)
      item_vectors.npy    (n_items, d) float32, L2-normalised; row = item_index
      user_vectors.npy    (n_users, d) float32, L2-normalised; row = user_index (from train history)
      user_encoder.pt     what turns a live history into a user vector (see `UserEncoder`)
      metrics.json        evaluation results (optional)

Serving needs `UserEncoder.encode` because a user's history changes between trainings
(events arrive in real time); offline evaluation uses the precomputed `user_vectors`.

Nothing in a run directory may execute code when it is loaded: a run directory can come from
anyone who can write a folder the server can read (`POST /admin/model`). Tensors are read with
`torch.load(weights_only=True)` (tensors, numbers, strings, lists and dicts only), arrays with
`allow_pickle=False`, metadata as JSON/TOML; a file that needs more is refused as a `RunDirError`.
Every file must be a regular file: a FIFO or device would block the loader forever.
"""
from __future__ import annotations

import json
import stat
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import polars as pl

from recsys.provenance import run_provenance

REQUIRED_FILES = ("run.json", "items.parquet", "users.parquet", "item_vectors.npy", "user_vectors.npy", "user_encoder.pt")
OPTIONAL_FILES = ("config.toml", "metrics.json")


class RunDirError(ValueError):
    """A run directory that is missing, partial or corrupt; the message says which file and why."""


class UserEncoder(Protocol):
    """Maps item-index histories (oldest first) to L2-normalised user vectors in the item space.

    `runtime` names what computes them (reported by `/readyz` and `/admin/model`).
    """

    runtime: str

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray: ...


class MeanPoolUserEncoder:
    """A user is the recency-weighted mean of the vectors of the items they interacted with.

    The simplest real user tower; also the fallback for model kinds that export no network.
    `half_life` counts events: the item `half_life` positions back weighs half the newest.
    """

    kind = "mean_pool"
    runtime = "numpy"

    def __init__(self, item_vectors: np.ndarray, half_life: float = 20.0):
        self.item_vectors = item_vectors
        self.half_life = half_life

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray:
        out = np.zeros((len(histories), self.item_vectors.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            if not history:
                continue
            age = np.arange(len(history) - 1, -1, -1, dtype=np.float32)
            weights = 0.5 ** (age / self.half_life)
            out[row] = weights @ self.item_vectors[np.asarray(history, dtype=np.int64)]
        return l2_normalise(out)


# Model kinds register a loader: (payload saved in user_encoder.pt, the RunArtifact) -> UserEncoder.
USER_ENCODER_LOADERS: dict[str, Callable[[dict[str, Any], "RunArtifact"], UserEncoder]] = {
    MeanPoolUserEncoder.kind: lambda payload, run: MeanPoolUserEncoder(run.item_vectors, **payload.get("kwargs", {})),
}


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


@dataclass
class RunArtifact:
    run_dir: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    items: pl.DataFrame
    users: pl.DataFrame
    item_vectors: np.ndarray
    user_vectors: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return str(self.meta["model_version"])

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @cached_property
    def item_index_by_id(self) -> dict[str, int]:
        return dict(zip(self.items["item_id"].to_list(), self.items["item_index"].to_list()))

    @cached_property
    def user_index_by_id(self) -> dict[str, int]:
        return dict(zip(self.users["user_id"].to_list(), self.users["user_index"].to_list()))

    @cached_property
    def user_encoder(self) -> UserEncoder:
        payload = load_tensors(self.run_dir / "user_encoder.pt")
        path = self.run_dir / "user_encoder.pt"
        kind = payload.get("kind") if isinstance(payload, dict) else None
        if kind not in USER_ENCODER_LOADERS:
            _import_model_kinds()
        if kind not in USER_ENCODER_LOADERS:
            raise RunDirError(f"{path}: unknown user encoder kind {kind!r} (known: {sorted(USER_ENCODER_LOADERS)})")
        return USER_ENCODER_LOADERS[kind](payload, self)


def regular_file(path: Path) -> Path:
    """`path` if it is a regular file; `RunDirError` for a FIFO, socket or device (opening one can block forever)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise RunDirError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
    if not stat.S_ISREG(mode):
        raise RunDirError(f"{path}: not a regular file (a FIFO, socket or device); a run directory holds plain files")
    return path


def load_tensors(path: Path) -> Any:
    """A `.pt` file of a run directory, read weights-only: tensors and plain data, never code.

    Raises `RunDirError` for a truncated or foreign file, and for a file whose unpickling would
    need anything else (a class, a function: how a checkpoint runs a command on load).
    """
    import pickle

    import torch

    regular_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        hint = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise RunDirError(f"{path}: refused, it needs more than tensors and plain data to load (weights-only "
                          f"loading: {hint[:300]}); run files never execute code: re-export the run") from exc
    except Exception as exc:  # a truncated or foreign file
        raise RunDirError(f"{path}: cannot be loaded ({exc.__class__.__name__}: {exc})") from exc


def _import_model_kinds() -> None:
    """Model modules register their loaders on import; import them lazily (torch is heavy)."""
    try:
        import recsys.models  # noqa: F401
    except ImportError:
        pass


def save_run(run_dir: Path, *, model_version: str, dataset: str, data_version: str, config: dict[str, Any],
             items: pl.DataFrame, users: pl.DataFrame, item_vectors: np.ndarray, user_vectors: np.ndarray,
             user_encoder_payload: dict[str, Any], metrics: dict[str, Any] | None = None,
             extra_meta: dict[str, Any] | None = None) -> Path:
    """Write a complete run directory; `run.json` goes last, so a crash never leaves a loadable half-run."""
    import tomli_w
    import torch

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    assert item_vectors.shape[0] == items.height, f"item_vectors has {item_vectors.shape[0]} rows for {items.height} items"
    assert user_vectors.shape[0] == users.height, f"user_vectors has {user_vectors.shape[0]} rows for {users.height} users"
    (run_dir / "config.toml").write_text(tomli_w.dumps(_toml_safe(config)))
    items.write_parquet(run_dir / "items.parquet")
    users.write_parquet(run_dir / "users.parquet")
    np.save(run_dir / "item_vectors.npy", item_vectors.astype(np.float32))
    np.save(run_dir / "user_vectors.npy", user_vectors.astype(np.float32))
    torch.save(user_encoder_payload, run_dir / "user_encoder.pt")
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    meta = {"model_version": model_version, "dataset": dataset, "data_version": data_version,
            "created_at": time.time(), "user_encoder": user_encoder_payload.get("kind"), **run_provenance(),
            **(extra_meta or {})}
    tmp = run_dir / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(run_dir / "run.json")
    return run_dir


def _toml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def load_run(run_dir: Path | str, *, mmap: bool = False) -> RunArtifact:
    """Open and check a run directory; raises `RunDirError` naming the first bad file.

    Args:
        mmap: memory-map item_vectors.npy read-only instead of reading it (serving: the server's
            worker processes then share one copy through the page cache).
    """
    import tomllib

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory does not exist")
    missing = [f for f in REQUIRED_FILES if not (run_dir / f).exists()]
    if missing:
        raise RunDirError(f"{run_dir}: incomplete run directory, missing {', '.join(missing)}")
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        if name in REQUIRED_FILES or (run_dir / name).exists():
            regular_file(run_dir / name)
    reading = "run.json"  # named in the error: "corrupt" alone does not say which file to fix
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        reading = "config.toml"
        config = tomllib.loads((run_dir / "config.toml").read_text()) if (run_dir / "config.toml").exists() else {}
        reading = "items.parquet"
        items = pl.read_parquet(run_dir / "items.parquet")
        reading = "users.parquet"
        users = pl.read_parquet(run_dir / "users.parquet")
        reading = "item_vectors.npy"
        item_vectors = np.load(run_dir / "item_vectors.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
        reading = "user_vectors.npy"
        user_vectors = np.load(run_dir / "user_vectors.npy", allow_pickle=False)
        reading = "metrics.json"
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    except Exception as exc:
        raise RunDirError(f"{run_dir}: corrupt run directory, {reading} cannot be read "
                          f"({exc.__class__.__name__}: {exc})") from exc
    for key in ("model_version", "dataset"):
        if key not in meta:
            raise RunDirError(f"{run_dir / 'run.json'}: missing key '{key}'")
    if item_vectors.ndim != 2 or item_vectors.shape[0] != items.height:
        raise RunDirError(f"{run_dir / 'item_vectors.npy'}: shape {item_vectors.shape} does not match {items.height} items")
    if user_vectors.ndim != 2 or user_vectors.shape[0] != users.height or user_vectors.shape[1] != item_vectors.shape[1]:
        raise RunDirError(f"{run_dir / 'user_vectors.npy'}: shape {user_vectors.shape} does not match "
                          f"{users.height} users x {item_vectors.shape[1]} dims")
    if not (np.isfinite(item_vectors).all() and np.isfinite(user_vectors).all()):
        raise RunDirError(f"{run_dir}: vectors contain NaN or infinite values")
    return RunArtifact(run_dir, meta, config, items, users, item_vectors.astype(np.float32, copy=not mmap),
                       user_vectors.astype(np.float32), metrics)
