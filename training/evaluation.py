"""Offline evaluation: one harness that judges trained runs and baselines by the same protocol.

Public API:
- `evaluate_run(run_dir, split, task)`: a run directory on its dataset's split (`ranking`,
  `cross-media` or `cold-start`), as a JSON-ready dict;
- `per_user_metrics(run_dir, split)`: the per-user frame the A/B report consumes;
- `evaluate_baseline(name, dataset, split, task)`: fit a named baseline on train and judge it
  with exactly the same code.
The protocol (split, masking, groups) is in `evaluation_protocol`; metrics in `recsys.metrics`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.artifact import RunArtifact, load_run
from recsys.data import Dataset, load_dataset
from recsys.metrics import ScoreFn
from training.evaluation_cold_start import cold_start_report
from training.evaluation_cross_media import cross_media_report
from training.evaluation_protocol import EvalSplit, EvaluationError, prepare_split
from training.evaluation_ranking import per_user_frame, ranking_report
from training.evaluation_runs import aligned_score_fn, align_run, load_media_vectors

log = logging.getLogger(__name__)
TASKS = ("ranking", "cross-media", "cold-start")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r} (expected one of: {', '.join(TASKS)})")


def _open(run_dir: Path | str, split: str, dataset: Dataset | None) -> tuple[RunArtifact, EvalSplit]:
    run = load_run(run_dir)
    ds = dataset if dataset is not None else load_dataset(run.dataset)
    own_version = ds.version
    if dataset is None:  # the live catalogue the run was trained with (training.catalogue_fold)
        from training.catalogue_fold import fold_recorded
        from training.served_events_fold import fold_recorded_events

        ds = fold_recorded_events(fold_recorded(ds, run.meta.get("catalogue_log")), run.meta.get("served_events"))
    strategy = run.meta.get("split_strategy") or run.config.get("split_strategy")
    strategy = str(strategy).replace("_", "-") if strategy else None  # "leave_last_out" is the same strategy
    ev = prepare_split(ds, split, strategy, run_tie_break(run.config), refit=run_refit(run.config))
    if run.meta.get("data_version") not in (None, own_version, ds.version, ev.dataset.version):
        log.warning("run %s was trained on data version %s, evaluating on %s", run.model_version,
                    run.meta.get("data_version"), ds.version)
    return run, ev


def run_tie_break(config: dict[str, Any]) -> str:
    """The leave-last-out tie rule a run was trained with; runs older than the setting used item-index."""
    return str((config.get("data") or {}).get("tie_break", "item-index"))


def run_refit(config: dict[str, Any]) -> bool:
    """Whether a run serves members trained again on train + valid (`train.refit`; runs older than it did not)."""
    return bool((config.get("train") or {}).get("refit", False))


def evaluate_run(run_dir: Path | str, split: str = "test", task: str = "ranking",
                 dataset: Dataset | None = None) -> dict[str, Any]:
    """Evaluate a run directory; `dataset` overrides the one named in run.json (tests, ad-hoc data).

    Raises `RunDirError` (bad run directory), `DataValidationError` (dataset not found or invalid)
    or `EvaluationError` (unknown split/task, nothing to evaluate).
    """
    _check_task(task)
    run, ev = _open(run_dir, split, dataset)
    header = {"model_version": run.model_version, "dataset": run.dataset, "split": split,
              "split_strategy": ev.strategy, "ranked_from": ev.ranked_from, "task": task}
    if task == "cross-media":
        return {**header, **cross_media_report(load_media_vectors(run, ev.dataset), ev.cold_items)}
    aligned = align_run(run, ev.dataset, _history(ev))
    body = _score_task(aligned_score_fn(aligned, ev.popularity, served_prior=task == "ranking"), ev, task)
    if task == "ranking":
        body["n_users_unknown_to_run"] = aligned.n_users_unknown
    return {**header, **body}


def per_user_metrics(run_dir: Path, split: str = "test") -> pl.DataFrame:
    """One row per evaluated user: user_id (str), n_train (int), media (str, dominant media type of
    the user's held-out items, may be null), recall@10, recall@20, ndcg@10, ndcg@20, mrr, hit_rate@20."""
    run, ev = _open(run_dir, split, None)
    return per_user_frame(aligned_score_fn(align_run(run, ev.dataset, _history(ev)), ev.popularity, served_prior=True), ev)


def _history(ev: EvalSplit) -> pl.DataFrame | None:
    """The events users must be re-encoded from (test after valid on a time-ordered split), else None:
    the run's own user vectors already encode the train events."""
    return ev.known if ev.reads_past_train else None


def evaluate_baseline(name: str, dataset: str | Dataset, split: str = "test", task: str = "ranking",
                      split_strategy: str | None = None, tie_break: str = "file-order", **overrides: Any) -> dict[str, Any]:
    """Fit baseline `name` (see `recsys.baselines.BASELINES`) on train and evaluate it like a run.

    Baselines that learn (BPR-MF, LightGCN, SASRec) choose their epoch on `valid` (never on test).
    Ranking test after valid on a time-ordered split, a baseline with a history input (ItemKNN,
    SASRec: `read_histories`) reads train + valid events, as a run's served encoder does; models
    whose user is a learned embedding (BPR-MF, LightGCN) keep their train-fitted scores, as in RecBole."""
    import training.content_baseline  # noqa: F401  (registers the content-only baseline)

    _check_task(task)
    if task == "cross-media":
        raise EvaluationError("the cross-media task needs a run directory with item_media_vectors.npz, not a baseline")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    ev = prepare_split(ds, split, split_strategy, tie_break)  # type: ignore[arg-type]
    start = time.perf_counter()
    model = fit_baseline(name, ev, **overrides)
    fit_seconds = time.perf_counter() - start
    header = {"model_version": f"baseline:{name}", "dataset": ds.name, "split": split,
              "split_strategy": ev.strategy, "ranked_from": ev.ranked_from, "tie_break": tie_break, "task": task,
              "fit_seconds": round(fit_seconds, 3)}
    return {**header, **_score_task(model.score, ev, task)}


def fit_baseline(name: str, ev: EvalSplit, **overrides: Any):
    """Baseline `name` fitted on `ev`'s train, reading the events `ev` ranks from (see `evaluate_baseline`)."""
    from recsys.baselines import make_baseline

    try:
        model = make_baseline(name, dataset=ev.dataset.name, **overrides)
    except KeyError as exc:
        raise EvaluationError(str(exc.args[0])) from exc
    start = time.perf_counter()
    try:
        model.fit(ev.dataset, ev.train)
    except ValueError as exc:  # a baseline that refuses this data (SLIT without time, EASE over its size)
        raise EvaluationError(f"baseline {name} cannot be fitted on {ev.dataset.name}: {exc}") from exc
    if ev.reads_past_train and hasattr(model, "read_histories"):  # models with a history input read the known events
        model.read_histories(ev.known)
    log.info("fitted %s on %s train (%d interactions) in %.1fs", name, ev.dataset.name, ev.train.height,
             time.perf_counter() - start)
    return model


def _score_task(score_fn: ScoreFn, ev: EvalSplit, task: str) -> dict[str, Any]:
    if task == "cold-start":
        return cold_start_report(score_fn, ev)
    return ranking_report(score_fn, ev)


def to_jsonable(value: Any) -> Any:
    """Floats/ints from numpy become plain Python; NaN becomes null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
