"""Epoch selection on `valid`, shared by the baselines that learn (BPR-MF, LightGCN, SASRec).

Robust default: the epoch is chosen on `valid` (NDCG@20 every `eval_every` epochs, stop after
`patience` evaluations without a better one, keep the best weights), so a baseline's `epochs`
is a cap, not a guess. A dataset without a valid split trains the cap.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import torch

from recsys.data.schema import Dataset
from recsys.metrics import ScoreFn, evaluate_scores

log = logging.getLogger(__name__)


class BestOnValid:
    """Tracks valid NDCG@20 over epochs and keeps the best weights of `module`.

    Example::

        pick = BestOnValid(model, dataset, train, eval_every=5, patience=4, cap=200)
        for epoch in range(1, 201):
            ...train one epoch...
            if pick.stop_after(epoch, model.score):
                break
        pick.restore()
    """

    def __init__(self, module: torch.nn.Module, dataset: Dataset, train: pl.DataFrame,
                 eval_every: int, patience: int, cap: int) -> None:
        self.module, self.train, self.n_items = module, train, dataset.n_items
        self.valid = valid_split(dataset)
        self.eval_every, self.patience, self.cap = eval_every, patience, cap
        self.best, self.best_epoch, self.since_best = -1.0, cap, 0
        self.history: list[tuple[int, float]] = []  # (epoch, valid NDCG@20) of each evaluation
        self._state: dict[str, torch.Tensor] | None = None

    def stop_after(self, epoch: int, score: ScoreFn) -> bool:
        """Evaluate when due; True once `patience` evaluations in a row did not beat the best."""
        if self.valid is None or not (epoch % self.eval_every == 0 or epoch == self.cap):
            return False
        value = evaluate_scores(score, self.valid, self.train, self.n_items, ks=(20,))["ndcg@20"]
        self.history.append((epoch, value))
        log.debug("epoch %d: valid NDCG@20 %.4f", epoch, value)
        if value > self.best:
            self.best, self.since_best, self.best_epoch = value, 0, epoch
            self._state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, name: str) -> None:
        """Load the best weights (if any evaluation ran) and log the choice."""
        if self._state is not None:
            self.module.load_state_dict(self._state)
        log.info("%s: best valid NDCG@20 %.4f at epoch %d", name, self.best, self.best_epoch)


def valid_split(dataset: Dataset) -> pl.DataFrame | None:
    """The dataset's valid interactions, when its split has any (else the fixed `epochs` are trained)."""
    if "split" not in dataset.interactions.columns:
        return None
    valid = dataset.split("valid")
    return valid if valid.height else None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
