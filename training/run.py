"""`train(config, run_dir)`: data -> model -> (DMP) -> epochs -> best weights -> run directory.

With `train.ensemble = K > 1` it trains K towers with seeds seed..seed+K-1 and exports the
concatenation of their vectors (`recsys.models.ensemble`: still one user vector · item vectors).

Also the torchrun entry point: `torchrun --nproc_per_node=2 -m training.run --dataset tiktok --out RUN_DIR`
(`recsys train` forwards to the same function, in-process or under torchrun).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tqdm.contrib.logging import logging_redirect_tqdm

from recsys.data.splits import known_before
from recsys.logs import configure_logging
from recsys.metrics import evaluate_scores
from recsys.models import GraphContext, TaskInputs, TwoTowerTrainTask, build_model
from recsys.models.next_item import SequenceWindows
from recsys.models.task import resolve_step
from recsys.models.popularity_prior import prior_counts, standardised_log_counts
from training.checkpoint import CHECKPOINT_DIR, LAST
from training.closed_form import ClosedFormMember, fit_closed_form_member, refit_closed_form_member
from training.config import TrainConfig, load_config
from training.data import TrainingData, build_training_data
from training.distributed import DistContext, broadcast, gather, init_distributed, shutdown, weights_digest, wrap_model
from training.export import (MEMBERS_DIR, MODEL_KIND, Member, RunMember, combined_vectors, export_run,
                             served_scorer, served_user_vectors, user_encoder_payload)
from training.job_bar import JobBar
from training.run_lock import exclusive_run
from training.trainer import Trainer, best_score_until, summarise_history

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` returns on every rank; `task` holds the best weights (tests compare ranks with it)."""

    run_dir: Path
    metrics: dict[str, Any]
    best_epoch: int
    seconds: float
    task: TwoTowerTrainTask | None = field(default=None, repr=False)
    members: list[Member] = field(default_factory=list, repr=False)


def build_task(config: TrainConfig, data: TrainingData) -> TwoTowerTrainTask:
    """Seeded model construction: the same config gives the same initial weights on every rank."""
    torch.manual_seed(config.train.seed)
    model = build_model(MODEL_KIND, config.model, data.n_items, data.n_users, data.media_dims)
    model.item_tower.fit_statistics(data.catalog)
    graph = data.graph.renormalised(config.model.graph_self_exponent, config.model.graph_neighbour_exponent)
    graphs = GraphContext(graph if config.model.propagation_layers > 0 else None,
                          data.knn_graph(config.model.item_knn, config.model.item_knn_space == "standardised"))
    catalog = data.catalog
    if config.model.cold_item_prior > 0:
        prior = standardised_log_counts(prior_counts(data.item_counts, config.model.cold_item_prior))
        catalog = dataclasses.replace(catalog, popularity=prior)
    sequences = None
    if resolve_step(config.loss, data.n_items) == "sequence":  # windows as long as the served history
        positions = data.window.size if config.model.user_pooling != "self_attention" else \
            min(data.window.size, config.model.attention_positions)
        sequences = SequenceWindows(data.train_users, data.train_items, positions)
    return TwoTowerTrainTask(model, config.loss, TaskInputs(catalog, data.histories, graphs, data.item_counts,
                                                            sequences))


def member_dir(run_dir: Path, k: int, n_members: int) -> Path:
    """Where member k checkpoints: the run directory itself for a single tower, else members/<k>/."""
    return run_dir if n_members == 1 else run_dir / MEMBERS_DIR / str(k)


def train_member(config: TrainConfig, data: TrainingData, run_dir: Path, resume: bool, progress: bool,
                 ctx: DistContext, job_bar: Any = None, stop_after: int | None = None,
                 end_at: int | None = None) -> Member:
    """One seeded tower: (DMP-wrapped) epochs with early stopping, ending on its best-on-valid weights
    (or paused after epoch `stop_after`, or ended after epoch `end_at`: see `Trainer.fit`)."""
    task = build_task(config, data)
    wrapped = wrap_model(task, ctx)
    trainer = Trainer(config, data, task, wrapped, ctx, run_dir, progress, job_bar)
    state = trainer.fit(resume=resume, stop_after=stop_after, end_at=end_at)
    output = trainer.tower_output()
    # Every rank must end with the same weights (DDP all-reduce, same seeds); record the proof.
    digests = gather(weights_digest(task), ctx)
    if len(set(digests)) > 1:
        log.error("ranks disagree on the final weights: %s", digests)
    return Member(config, task, output, state, type(wrapped).__name__, digests)


PILOT_DIR = "pilot"  # run_dir/pilot/<i>/: the tower of pilot candidate i
REFIT_DIR = "refit"  # run_dir/refit/<k>/: member k trained again on train + valid (`train.refit`)


@dataclass
class Refit:
    """What `train.refit` serves: the members trained again on train + valid, on that data."""

    data: TrainingData
    members: list[Member]
    closed: ClosedFormMember | None
    report: dict[str, Any]


def refit_run(config: TrainConfig, members: list[Member], closed: ClosedFormMember | None, run_dir: Path, resume: bool,
              progress: bool, ctx: DistContext) -> Refit:
    """Each member trained again from its own config and seed on train + valid, replaying its selection fit up to
    the epoch valid chose (the same lr schedule, over the same `train.epochs`; no early stopping: there is no valid
    left), and the closed-form member refitted at its chosen settings. Checkpoints in `run_dir/refit/<k>/`, so a
    killed refit resumes where it stopped.

    Why the same epochs: an epoch is a pass over the data, so the epoch count valid chose carries over to the
    ~5-10 % more data valid adds (a user's last event, or a few percent of the interactions)."""
    data = build_training_data(config.data, valid_in_train=True)
    epochs = [max(m.state.best_epoch, 1) for m in members]
    log.info("refit on train + valid (%d train pairs): epochs %s", len(data.train_users), ",".join(map(str, epochs)))
    refit: list[Member] = []
    job_bar = JobBar(total=sum(m.config.train.epochs for m in members), desc=f"refit {config.data.dataset}",
                     unit="epoch", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    with logging_redirect_tqdm(), job_bar:  # (each member takes the epochs past its end off the bar's total)
        for k, (member, n_epochs) in enumerate(zip(members, epochs)):
            raw = member.config.model_dump()
            raw["train"]["refit"] = False
            refit.append(train_member(TrainConfig.model_validate(raw), data, run_dir / REFIT_DIR / str(k), resume,
                                      progress, ctx, job_bar, end_at=n_epochs))
    closed_refit = refit_closed_form_member(config, closed, data, [m.temperature for m in refit]) \
        if closed is not None else None
    return Refit(data, refit, closed_refit, {"epochs": epochs, "train_pairs": len(data.train_users)})


@dataclass
class PilotChoice:
    """The pilot's outcome: the config every member trains with, its member 0, and what was compared."""

    config: TrainConfig
    member: Member
    report: dict[str, Any]


def run_pilot(config: TrainConfig, data: TrainingData, run_dir: Path, resume: bool, progress: bool,
              ctx: DistContext, job_bar: Any = None) -> PilotChoice:
    """Train member 0 once per `train.pilot` candidate and keep the candidate valid scores best (ties: the first).

    Why a pilot instead of a rule: the logQ strength that ranks best differs by data (x3 on TikTok and the
    thinned ML-100K, x1 on Last.fm, where x3 loses 17 % of valid NDCG@20), and one data set on the x1 side is
    too little to fit a rule on the data's statistics; one extra tower lets valid decide. Each candidate's
    tower checkpoints in `run_dir/pilot/<i>/`, so a killed run resumes there too; the winner's tower is
    reused as member 0.

    Successive halving (`train.pilot_epochs` = E > 0): every candidate trains E epochs, the best valid score
    by then picks the leader, and only the leader trains on (exactly as if never paused: it resumes its
    checkpoint). The trailing candidates cost E epochs each instead of a whole training, which matters where
    a tower takes hours (Gowalla, Amazon-Sports); on the seven sets where both candidates were trained out,
    the epoch-3 leader was the final winner on all seven.
    """
    metric = config.train.select_metric
    decide_at = config.train.pilot_epochs or None
    if decide_at is not None:  # the first evaluated epoch at or after it
        every = config.train.eval_every
        decide_at = min(-(-decide_at // every) * every, config.train.epochs)
    candidates = [config.with_settings(entry) for entry in config.train.pilot]
    rows, towers = [], []
    for i, (entry, candidate) in enumerate(zip(config.train.pilot, candidates)):
        log.info("pilot %d/%d: %s", i + 1, len(candidates), _settings(entry))
        tower = train_member(candidate.member(0), data, run_dir / PILOT_DIR / str(i), resume, progress, ctx, job_bar,
                             stop_after=decide_at)
        score = tower.state.best_score if decide_at is None else best_score_until(tower.state, metric, decide_at)
        towers.append(tower)
        rows.append({"settings": entry, "valid": score})
    chosen = max(range(len(rows)), key=lambda i: (rows[i]["valid"], -i))
    if decide_at is not None:
        log.info("pilot: %s leads after epoch %d (valid %s %.4f; %s); only it trains on", _settings(config.train.pilot[chosen]),
                 decide_at, metric, rows[chosen]["valid"],
                 ", ".join(f"{_settings(r['settings'])} {r['valid']:.4f}" for r in rows))
        for i, tower in enumerate(towers):
            rows[i]["epochs_at_decision"] = min(tower.state.epoch, decide_at)  # the same when resumed past it
            paused = tower.state.epoch < config.train.epochs and tower.state.epochs_since_best < config.train.patience
            if i != chosen and job_bar is not None and paused:  # (a tower stopped by patience was taken off already)
                job_bar.total -= config.train.epochs - tower.state.epoch  # the trailing candidate's epochs not run
        towers = [None] * len(towers)  # free the paused towers before the leader trains on
        towers[chosen] = train_member(candidates[chosen].member(0), data, run_dir / PILOT_DIR / str(chosen), True,
                                      progress, ctx, job_bar)
    leader = towers[chosen]
    rows[chosen].update(final_valid=leader.state.best_score, best_epoch=leader.state.best_epoch)
    log.info("pilot: %s chosen (valid %s %.4f; %s)", _settings(config.train.pilot[chosen]), metric,
             leader.state.best_score, ", ".join(f"{_settings(r['settings'])} {r['valid']:.4f}" for r in rows))
    return PilotChoice(candidates[chosen], leader, {"metric": metric, "decided_at_epoch": decide_at,
                                                   "candidates": rows, "chosen": chosen})


def _settings(entry: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in entry.items()) or "(as configured)"


DATA_MARKER = "data.json"  # beside the checkpoints: the data they were trained on


def check_resumable_data(run_dir: Path, data: TrainingData, resume: bool, ctx: DistContext) -> None:
    """Refuse to resume checkpoints of another catalogue (ValueError): the config fingerprint does
    not see data, and the live-catalogue log may have grown since a run was killed (its item tables
    would no longer fit). Records the data identity for the next resume (rank 0)."""
    marker = run_dir / CHECKPOINT_DIR / DATA_MARKER
    fold = data.catalogue
    served = data.served_events
    identity = {"data_version": data.data_version, "n_items": data.n_items,
                "catalogue_log": {"log": fold.log, "ops": fold.ops, "digest": fold.digest} if fold else None,
                **({"served_events": {"events": served.events, "digest": served.digest}} if served else {})}
    checkpoints = any(run_dir.glob(f"**/{CHECKPOINT_DIR}/{LAST}"))
    if resume and checkpoints and marker.exists():
        saved = json.loads(marker.read_text())
        if saved != identity:
            raise ValueError(f"the checkpoints in {run_dir} were trained on other data ({saved.get('n_items')} items, "
                             f"catalogue log {saved.get('catalogue_log')}, served events {saved.get('served_events')}); "
                             f"now {identity['n_items']} items, catalogue log {identity['catalogue_log']}, served events "
                             f"{identity.get('served_events')} (items were added or taken down, or events were served, "
                             "since?): use --restart or another --out")
    if ctx.is_main:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(identity))


def served_form(parts: list[RunMember], data: TrainingData) -> tuple[np.ndarray, np.ndarray, dict[str, Any], float]:
    """What serving computes for `parts`, to evaluate it: (user vectors from the served encoder over each user's
    feature window, item vectors, the encoder payload, the largest gap to the training forward pass's users)."""
    trained_users, items = combined_vectors(parts)
    encoder = user_encoder_payload(parts)
    users = served_user_vectors(encoder, data)
    return users, items, encoder, float(np.abs(users - trained_users).max()) if users.size else 0.0


def evaluate_vectors(data: TrainingData, users: np.ndarray, items: np.ndarray, split: str,
                     ctx: DistContext, encoder: dict[str, Any]) -> dict[str, Any]:
    """Full-ranking metrics of the served scores on `split`, on rank 0, shared: the harness's protocol
    (`known_before`: ranking test after valid on a time-ordered split, users are re-encoded from train +
    valid by the served `encoder` and those items masked; otherwise train-time `users`, train mask)."""
    metrics: dict[str, Any] = {}
    held_out = data.valid if split == "valid" else data.test
    if ctx.is_main and held_out.height:
        known = known_before(data.dataset, split, data.split_strategy)
        if known.height != data.train.height:
            users = served_user_vectors(encoder, data, known)
        metrics = evaluate_scores(served_scorer(data, users, items), held_out, known,
                                  data.n_items)
    return broadcast(metrics, ctx)


def train(config: TrainConfig, run_dir: Path | str, resume: bool = True, progress: bool = True,
          data: TrainingData | None = None, ctx: DistContext | None = None, read_test: bool = True) -> TrainResult:
    """Train (`train.ensemble` seeded towers, one after another), evaluate on valid and test, write the run (rank 0).

    `read_test=False` leaves test unread (the run's `test` metrics empty): a search that chooses on valid
    (`recsys tune`) has no business seeing, or logging, the figure it must not choose by.

    With `resume` (default) a checkpoint in RUN_DIR from the same config is continued; one from
    another config is refused (ValueError) rather than silently mixed in. Ensemble members keep
    their own checkpoints (RUN_DIR/members/<k>/), so a killed ensemble resumes at the member and
    epoch where it stopped. A second job on the same RUN_DIR while one is alive is refused (`RunBusyError`).
    """
    run_dir = Path(run_dir)
    ctx = ctx or init_distributed()
    if not ctx.is_main:  # rank 0 holds the directory for the whole job
        return _train(config, run_dir, resume, progress, data, ctx, read_test)
    with exclusive_run(run_dir):
        return _train(config, run_dir, resume, progress, data, ctx, read_test)


def _train(config: TrainConfig, run_dir: Path, resume: bool, progress: bool, data: TrainingData | None,
           ctx: DistContext, read_test: bool = True) -> TrainResult:
    began = time.perf_counter()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    data = data or build_training_data(config.data)
    check_resumable_data(run_dir, data, resume, ctx)
    if config.train.refit and not data.valid.height:
        raise ValueError(f"train.refit: dataset {config.data.dataset} has no valid interactions under split "
                         f"{config.data.split}: nothing would choose the epochs and settings a refit trains with")
    n = config.train.ensemble
    members = []
    pilot: PilotChoice | None = None
    towers = n + max(len(config.train.pilot) - 1, 0)  # the pilot's winner is member 0
    # One bar over the whole job (towers x epochs, early stopping shrinks it), with its ETA; epoch
    # lines go through logging, printed above the bar.
    job_bar = JobBar(total=towers * config.train.epochs, desc=f"train {config.data.dataset}", unit="epoch",
                   disable=not (progress and ctx.is_main), dynamic_ncols=True)
    with logging_redirect_tqdm(), job_bar:
        if config.train.pilot:
            job_bar.set_description(f"train {config.data.dataset} pilot")
            pilot = run_pilot(config, data, run_dir, resume, progress, ctx, job_bar)
            members.append(pilot.member)
        chosen = pilot.config if pilot is not None else config  # the config every member trains with
        for k in range(len(members), n):
            if n > 1:
                log.info("ensemble member %d/%d (seed %d)", k + 1, n, config.train.seed + k)
                job_bar.set_description(f"train {config.data.dataset} member {k + 1}/{n}")
            members.append(train_member(chosen.member(k), data, member_dir(run_dir, k, n), resume, progress,
                                        ctx, job_bar))
    users, items, encoder, gap = served_form(members, data)
    closed, closed_report = fit_closed_form_member(config, data, users, items, [m.temperature for m in members], ctx)
    parts: list[RunMember] = [*members, *([closed] if closed is not None else [])]
    if closed is not None:  # the run serves towers + the closed-form member as one concatenation
        users, items, encoder, gap = served_form(parts, data)
    valid = evaluate_vectors(data, users, items, "valid", ctx, encoder)
    test = evaluate_vectors(data, users, items, "test", ctx, encoder) if read_test else {}
    refit: Refit | None = None
    if config.train.refit:  # valid has chosen: serve (and test) the members trained again on train + valid
        refit = refit_run(config, members, closed, run_dir, resume, progress, ctx)
        refit.report["selection_fit_test"] = test
        data, parts = refit.data, [*refit.members, *([refit.closed] if refit.closed is not None else [])]
        users, items, encoder, refit_gap = served_form(parts, data)
        gap = max(gap, refit_gap)
        test = evaluate_vectors(data, users, items, "test", ctx, encoder) if read_test else {}
    if gap > 1e-4:
        log.warning("served user vectors differ from the training forward pass by up to %.2g", gap)
    first = members[0]
    history = first.state.history if n == 1 else [h for m in members for h in m.state.history]
    metrics = {"best_epoch": first.state.best_epoch, "select_metric": config.train.select_metric, "valid": valid,
               "test": test, "training": {**summarise_history(history), "world_size": ctx.world_size,
                                          "wrapper": first.wrapper, "rank_weight_digests": first.digests},
               "history": first.state.history, "data": data.describe(), "train_serve_max_abs_diff": gap}
    metrics["training"]["wall_seconds"] = round(time.perf_counter() - began, 1)  # training + evaluation, before export
    if n > 1:
        overrides = config.train.member_overrides
        metrics["members"] = [{"seed": m.config.train.seed, "best_epoch": m.state.best_epoch,
                               "valid": m.state.best_metrics, "history": m.state.history,
                               "rank_weight_digests": m.digests,
                               **({"overrides": overrides[k]} if k < len(overrides) and overrides[k] else {})}
                              for k, m in enumerate(members)]
        metrics["training"]["rank_weight_digests"] = [
            "".join(d) for d in zip(*[m.digests for m in members])]  # per rank: every member's digest
    if pilot is not None:
        metrics["pilot"] = pilot.report
    if closed_report is not None:  # considered: kept (weight > 0), or why not
        metrics["closed_form"] = closed_report
    if refit is not None:  # valid is the selection fit's, test the refit's; the selection fit's test beside it
        metrics["refit"] = refit.report
    if ctx.is_main:
        export_run(run_dir, config, data, parts, metrics, encoder=encoder, users=users)
    seconds = time.perf_counter() - began
    log.info("run %s: %s, valid %s, test %s (%.0f s)", run_dir,
             f"best epoch {first.state.best_epoch}" if n == 1 else
             "best epochs " + ",".join(str(m.state.best_epoch) for m in members),
             _short(valid), _short(test), seconds)
    return TrainResult(run_dir, metrics, first.state.best_epoch, seconds, first.task, members)


def _short(metrics: dict[str, Any]) -> str:
    return "/".join(f"{metrics[k]:.4f}" for k in ("recall@20", "ndcg@20") if k in metrics) or "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the two-tower model (also under torchrun).")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    configure_logging()
    ctx = init_distributed()
    try:
        config = load_config(args.config, args.dataset, args.overrides)
        train(config, args.out, resume=not args.no_resume, progress=not args.no_progress, ctx=ctx)
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    main()
    # The run is written and the process group destroyed. Leave without C++ static destructors: a gloo thread
    # torn down at interpreter exit can abort a rank ("terminate called without an active exception", SIGABRT)
    # after a successful run, and torchrun then reports the whole job as failed (seen in CI with the same
    # TorchRec/gloo stack, tests/support/sharded_table_job.py). A failure above still exits through Python.
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
