"""`train(config, run_dir)`: data -> model -> (DMP) -> epochs -> best weights -> run directory.

Also the torchrun entry point: `torchrun --nproc_per_node=2 -m training.run --dataset tiktok --out RUN_DIR`
(`recsys train` forwards to the same function, in-process or under torchrun).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recsys.models import GraphContext, TaskInputs, TwoTowerTrainTask, build_model
from recsys.models.popularity import prior_counts, standardised_log_counts
from training.config import TrainConfig, load_config
from training.data import TrainingData, build_training_data
from training.distributed import DistContext, init_distributed, shutdown, wrap_model
from training.export import MODEL_KIND, export_run
from training.trainer import Trainer, summarise_history

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` returns on every rank; `task` holds the best weights (tests compare ranks with it)."""

    run_dir: Path
    metrics: dict[str, Any]
    best_epoch: int
    seconds: float
    task: TwoTowerTrainTask | None = field(default=None, repr=False)


def build_task(config: TrainConfig, data: TrainingData) -> TwoTowerTrainTask:
    """Seeded model construction: the same config gives the same initial weights on every rank."""
    torch.manual_seed(config.train.seed)
    model = build_model(MODEL_KIND, config.model, data.n_items, data.n_users, data.media_dims)
    model.item_tower.fit_statistics(data.catalog)
    graphs = GraphContext(data.graph if config.model.propagation_layers > 0 else None,
                          data.knn_graph(config.model.item_knn))
    catalog = data.catalog
    if config.model.cold_item_prior > 0:
        prior = standardised_log_counts(prior_counts(data.item_counts, config.model.cold_item_prior))
        catalog = dataclasses.replace(catalog, popularity=prior)
    return TwoTowerTrainTask(model, config.loss, TaskInputs(catalog, data.histories, graphs, data.item_counts))


def train(config: TrainConfig, run_dir: Path | str, resume: bool = True, progress: bool = True,
          data: TrainingData | None = None, ctx: DistContext | None = None) -> TrainResult:
    """Train, pick the best epoch on valid, evaluate it on test, write the run directory (rank 0).

    With `resume` (default) a checkpoint in RUN_DIR from the same config is continued; one from
    another config is refused (ValueError) rather than silently mixed in.
    """
    began = time.perf_counter()
    run_dir = Path(run_dir)
    ctx = ctx or init_distributed()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    data = data or build_training_data(config.data)
    task = build_task(config, data)
    trainer = Trainer(config, data, task, wrap_model(task, ctx), ctx, run_dir, progress)
    state = trainer.fit(resume=resume)
    output = trainer.tower_output()
    valid = trainer.evaluate("valid", output)
    test = trainer.evaluate("test", output) if data.test.height else {}
    metrics = {"best_epoch": state.best_epoch, "select_metric": config.train.select_metric, "valid": valid,
               "test": test, "training": {**summarise_history(state.history), "world_size": ctx.world_size},
               "history": state.history, "data": data.describe()}
    if ctx.is_main:
        export_run(run_dir, config, data, task, output, metrics)
    seconds = time.perf_counter() - began
    log.info("run %s: best epoch %d, valid %s, test %s (%.0f s)", run_dir, state.best_epoch,
             _short(valid), _short(test), seconds)
    return TrainResult(run_dir, metrics, state.best_epoch, seconds, task)


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = init_distributed()
    try:
        config = load_config(args.config, args.dataset, args.overrides)
        train(config, args.out, resume=not args.no_resume, progress=not args.no_progress, ctx=ctx)
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    main()
