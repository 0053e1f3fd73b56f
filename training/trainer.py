"""The epoch loop: shuffled batches of train pairs, full or sampled steps, valid evaluation, early stopping.

Reproducibility: every epoch re-seeds its own generator from (seed, epoch), so the same config gives
the same metrics and a resumed run continues on exactly the batches the killed one would have seen.
Under torchrun every rank draws the same permutation and takes its slice of each global batch.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.metrics import dot_product_scorer, evaluate_scores
from recsys.models.task import TwoTowerTrainTask
from recsys.models.two_tower import TowerOutput
from training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import TrainingData
from training.distributed import DistContext, barrier, broadcast
from training.job_bar import JobBar

log = logging.getLogger(__name__)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    torch.manual_seed(seed * 100_003 + epoch)  # nn.Dropout draws from the global generator
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def scheduled_lr(base: float, schedule: str, warmup_epochs: float, epochs: int, progress: float) -> float:
    """Learning rate at `progress` epochs into training (fractional): warm-up, then constant or cosine.

    Why: at a fixed lr of .01 every run on an unseen Amazon dataset peaked at epoch 1 and then fell.
    A warm-up from lr/10 keeps the first steps (random towers, large gradients) from overshooting;
    the cosine decay to lr/20 by `epochs` lets later epochs refine instead of oscillating. A pure
    function of progress, so a resumed run continues on exactly the same schedule.
    """
    if warmup_epochs > 0 and progress < warmup_epochs:
        return base * (0.1 + 0.9 * progress / warmup_epochs)
    if schedule == "constant":
        return base
    span = max(epochs - warmup_epochs, 1e-9)
    done = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
    floor = base / 20
    return floor + (base - floor) * 0.5 * (1.0 + float(np.cos(np.pi * done)))


class SplitOptimizer:
    """Adam on the dense parameters + SparseAdam on sparse-gradient tables (the sampled step's ID tables).

    SparseAdam is the lazy Adam of recommender training: it updates only the rows a step looked up, so
    an optimiser step costs O(batch) rows, not O(catalogue). Weight decay is applied as Adam applies
    it (coupled L2, grad += weight_decay * w), on the looked-up rows only. Quacks like one optimiser
    (param_groups, zero_grad, step, state dicts).
    """

    def __init__(self, dense: list[torch.nn.Parameter], sparse: list[torch.nn.Parameter], lr: float,
                 weight_decay: float):
        self.dense = torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)
        self.sparse = torch.optim.SparseAdam(sparse, lr=lr)
        self.sparse_params, self.weight_decay = sparse, weight_decay

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.dense.param_groups + self.sparse.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        if self.weight_decay > 0:
            with torch.no_grad():
                for p in self.sparse_params:
                    if p.grad is not None:
                        grad = p.grad.coalesce()
                        p.grad = grad + self.weight_decay * p.sparse_mask(grad)
        self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer | SplitOptimizer:
    """Adam over `model`'s parameters; with sparse-gradient EmbeddingBags (sampled step) those get SparseAdam."""
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.EmbeddingBag) and m.sparse}
    params = list(model.parameters())
    if not sparse_ids:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return SplitOptimizer([p for p in params if id(p) not in sparse_ids], [p for p in params if id(p) in sparse_ids],
                          lr, weight_decay)


class WeightAverage:
    """Exponential moving average of the parameters (Polyak averaging), used for evaluation and export.

    Why: at the learning rates that train fastest here, valid NDCG@20 jumps by ~10% from one epoch
    to the next; the average of the last few hundred steps is both smoother and better than any
    single iterate. Early steps use decay min(decay, (1 + t) / (10 + t)) so the random
    initialisation is forgotten quickly. Every rank holds identical parameters (DDP), so the
    averages agree across ranks too.
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for avg, p in zip(self.shadow, self.params):
            avg.lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Parameters temporarily replaced by their averages (restored on exit)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, avg in zip(self.params, self.shadow):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.params, backup):
                    p.copy_(saved)

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "shadow": [t.clone() for t in self.shadow]}

    def load(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for avg, saved in zip(self.shadow, state["shadow"]):
            avg.copy_(saved)


class Trainer:
    """Trains a `TwoTowerTrainTask` (possibly DMP-wrapped) and keeps the best-on-valid weights.

    Args:
        config: the run config; data: training tensors; task: the unwrapped task;
        model: what to call for a step (the task, or DMP around it); run_dir: checkpoint home.
    """

    def __init__(self, config: TrainConfig, data: TrainingData, task: TwoTowerTrainTask, model: torch.nn.Module,
                 ctx: DistContext, run_dir: Path, progress: bool = True, job_bar: JobBar | None = None):
        self.config, self.data, self.task, self.model, self.ctx = config, data, task, model, ctx
        self.job_bar = job_bar  # the one bar of the whole job (epochs x members), owned by the caller
        self.run_dir = Path(run_dir)
        self.progress = progress and ctx.is_main
        opt = config.train
        self.optimizer = build_optimizer(model, opt.lr, opt.weight_decay)
        self.state = TrainState()
        self.end_at: int | None = None  # `fit(end_at=...)`: the last epoch, short of `epochs`
        self.average = WeightAverage([p for p in model.parameters() if p.requires_grad], opt.ema_decay) \
            if opt.ema_decay > 0 else None

    @contextmanager
    def evaluated_weights(self) -> Iterator[None]:
        """The weights evaluation sees: the running average while training, else the live ones."""
        if self.average is None:
            yield
        else:
            with self.average.swapped():
                yield

    # --- evaluation -------------------------------------------------------------------------
    def tower_output(self) -> TowerOutput:
        """Both towers over everything, in eval mode (no ID dropout), with the current live weights."""
        x = self.task.inputs
        self.task.eval()
        with torch.no_grad():
            out = self.task.model(x.catalog, x.histories, x.graphs)
        self.task.train()
        return out

    def evaluate(self, split: str, output: TowerOutput | None = None) -> dict[str, Any]:
        """Full-ranking metrics on `split` (mask = train items), computed on rank 0 and shared."""
        output = output if output is not None else self.tower_output()
        metrics: dict[str, Any] = {}
        if self.ctx.is_main:
            held_out = self.data.valid if split == "valid" else self.data.test
            scorer = dot_product_scorer(output.users.numpy(), output.items.numpy())
            metrics = evaluate_scores(scorer, held_out, self.data.train, self.data.n_items)
        return broadcast(metrics, self.ctx)

    # --- training ---------------------------------------------------------------------------
    def resume(self) -> bool:
        loaded = load_checkpoint(self.run_dir, self.config.fingerprint())
        if loaded is None:
            return False
        model_state, optim_state, self.state = loaded
        self.task.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        if self.average is not None and self.state.average is not None:
            self.average.load(self.state.average)
        log.info("resumed %s after epoch %d (best %s=%.4f at epoch %d)", self.run_dir, self.state.epoch,
                 self.config.train.select_metric, self.state.best_score, self.state.best_epoch)
        return True

    def train_epoch(self, epoch: int) -> dict[str, float]:
        opt = self.config.train
        gen = epoch_generator(opt.seed, epoch)
        sequences = self.task.inputs.sequences if self.task.step_kind == "sequence" else None
        # the sequence step's unit is a window of a user's sequence (batch_size counts its targets)
        n = sequences.n_windows if sequences is not None else len(self.data.train_users)
        perm = torch.randperm(n, generator=gen)
        step_size = sequences.windows_per_batch(opt.batch_size) if sequences is not None else opt.batch_size
        starts = [s for s in range(0, n, step_size) if min(step_size, n - s) >= 2 * self.ctx.world_size]
        bar = self.job_bar if self.progress else None
        total, parts_sum, seen, began = 0.0, {}, 0, time.perf_counter()
        self.task.begin_epoch()  # sampled step: neighbours' layers from this epoch's weights (O(catalogue) once)
        for step, start in enumerate(starts):
            lr = scheduled_lr(opt.lr, opt.lr_schedule, opt.warmup_epochs, opt.epochs, epoch - 1 + step / len(starts))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            rows = perm[start:start + step_size][self.ctx.rank::self.ctx.world_size]
            if sequences is not None:
                loss, parts = self.model(rows, None, gen)
            else:
                loss, parts = self.model(self.data.train_users[rows], self.data.train_items[rows], gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.average is not None:
                self.average.update()
            total += float(loss.detach())
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value)
            seen += int(sequences.lengths[rows].sum()) - len(rows) if sequences is not None else min(step_size, n - start)
            if bar is not None and (step % 8 == 0 or step == len(starts) - 1):
                rate = seen / max(time.perf_counter() - began, 1e-9)
                bar.set_postfix(epoch=epoch, step=f"{step + 1}/{len(starts)}", loss=f"{total / (step + 1):.4f}",
                                ex_s=f"{rate:,.0f}", refresh=False)
                bar.refresh()
        seconds = time.perf_counter() - began
        steps = max(len(starts), 1)
        return {"loss": total / steps, **{f"loss_{k}": v / steps for k, v in parts_sum.items()},
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": seconds, "examples_per_second": seen / max(seconds, 1e-9)}

    def finished(self) -> bool:
        """Whether training is over: `epochs` (or `fit`'s `end_at`) reached, or `patience` epochs without a better
        valid metric."""
        opt = self.config.train
        last = min(opt.epochs, self.end_at) if self.end_at else opt.epochs
        return self.state.epoch >= last or self.state.epochs_since_best >= opt.patience

    def fit(self, resume: bool = True, stop_after: int | None = None, end_at: int | None = None) -> TrainState:
        """Train until `epochs` or `patience` epochs without a better valid metric; checkpoint each epoch.

        `stop_after`: pause after that epoch (a checkpoint a later `fit(resume=True)` continues exactly, as
        if never paused) and keep the last epoch's weights; the pilot compares candidates there.
        `end_at`: end after that epoch as if it were the last, the lr schedule still the one over `epochs` (a refit
        replays the selection fit's epochs up to the one valid chose, `training.run.refit_run`).
        """
        self.end_at = end_at
        opt = self.config.train
        if resume and self.resume() and self.job_bar is not None:
            self.job_bar.resumed(self.run_dir, self.state.epoch)
        metric = opt.select_metric
        while not self.finished() and (stop_after is None or self.state.epoch < stop_after):
            epoch = self.state.epoch + 1
            stats = self.train_epoch(epoch)
            record: dict[str, Any] = {"epoch": epoch, **stats}
            if not self.data.valid.height:  # a refit (`train.refit`): nothing to choose on, the last epoch is it
                with self.evaluated_weights():
                    self.state.best_epoch = epoch
                    self.state.best_model = {k: v.detach().clone() for k, v in self.task.state_dict().items()}
            elif epoch % opt.eval_every == 0 or epoch == opt.epochs:
                with self.evaluated_weights():
                    valid = self.evaluate("valid")
                    record["valid"] = {k: valid[k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10", metric)}
                    if valid[metric] > self.state.best_score:
                        self.state.best_score, self.state.best_epoch = float(valid[metric]), epoch
                        self.state.best_metrics = valid
                        self.state.best_model = {k: v.detach().clone() for k, v in self.task.state_dict().items()}
                        self.state.epochs_since_best = 0
                    else:
                        self.state.epochs_since_best += opt.eval_every
            self.state.epoch = epoch
            self.state.average = self.average.state() if self.average is not None else None
            self.state.history.append(record)
            if self.job_bar is not None:
                self.job_bar.epoch_done(self.run_dir)
            if self.ctx.is_main:
                self._report(record)
                save_checkpoint(self.run_dir, self.config.fingerprint(), self.task.state_dict(),
                                self.optimizer.state_dict(), self.state)
            barrier(self.ctx)
        if not self.finished():  # paused (`stop_after`): the weights stay the last epoch's, to continue from
            return self.state
        if self.job_bar is not None and self.state.epoch < opt.epochs:  # stopped early: the ETA drops the rest
            self.job_bar.total -= opt.epochs - self.state.epoch
            self.job_bar.refresh()
        if self.state.best_model is not None:
            self.task.load_state_dict(self.state.best_model)
        return self.state

    def _report(self, record: dict[str, Any]) -> None:
        valid = record.get("valid")
        shown = f" valid R@20 {valid['recall@20']:.4f} N@20 {valid['ndcg@20']:.4f}" if valid else ""
        line = (f"epoch {record['epoch']}: loss {record['loss']:.4f}{shown} | {record['examples_per_second']:,.0f} ex/s, "
                f"{record['epoch_seconds']:.1f} s")
        log.info(line)  # once: under a job bar, `logging_redirect_tqdm` prints it above the bar


def best_score_until(state: TrainState, metric: str, epoch: int) -> float:
    """The best valid `metric` a tower reached by `epoch` (-inf before its first evaluation), from its history:
    the same figure whether the tower paused there or has trained past it since (a resumed run)."""
    return max((h["valid"][metric] for h in state.history if h["epoch"] <= epoch and "valid" in h), default=-np.inf)


def summarise_history(history: list[dict[str, Any]]) -> dict[str, float]:
    """Mean throughput and epoch time over the run (benchmarks and BENCHMARKS.md)."""
    if not history:
        return {}
    return {"epochs_run": len(history),
            "mean_epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history])),
            "mean_examples_per_second": float(np.mean([h["examples_per_second"] for h in history]))}
