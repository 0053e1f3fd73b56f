"""`tune(dataset, budget)`: a seeded random search around the dataset's config, judged on `valid`.

Why: the built-in recipe is robust, not optimal; a dataset that matters deserves a search, but
one that a 2-core CPU finishes in minutes. Trial 0 is the config `recsys train` would use (so the
result is never worse on valid than not tuning); every later trial changes a few knobs that
mattered in the sweeps (lr, weight decay, dimension, graph depth, loss, logQ strength, a fixed or
learned temperature, recency) and trains ONE
seeded tower with early stopping on valid. Trials start while the budget lasts (a trial that has
started finishes). The winner is written as TOML to `<folder>.toml` beside the dataset folder,
which the next `recsys train --dataset D` picks up (`training.config.config_source`).

Two guards against choosing noise. A sampled config that equals one already trained (a knob set
to the base's own value, or the same draw twice) is re-drawn, so every trial is new information.
And a challenger only replaces the base after a confirmation: the best trial and the base are
trained again with another seed, and the challenger wins only if its mean over the two seeds is
higher. On tiktok-random every trial of a 20-minute search landed within .001 NDCG@20 of the base
(one tower's seed spread), so without it the written config was whichever draw was luckiest.
The search stops early enough to leave room for the two confirmation trials.
"""
from __future__ import annotations

import copy
import json
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from training.config import EaseMemberConfig, TrainConfig, apply_overrides, beside_dataset_path, load_config
from training.data import build_training_data
from training.run import train

log = logging.getLogger(__name__)


@dataclass
class Trial:
    overrides: list[str]
    valid: float
    best_epoch: int
    seconds: float
    settled: dict[str, Any] | None = None  # the trial's config with its pilot decided (trial 0 of a recipe)


# How far a challenger's two-seed mean must lead the base's to replace it. Why: on Last.fm the search's best
# challenger (3 layers at dim 256) led the base by .2 % on two seeds each, at twice its training cost, while one
# tower's valid differs by up to 6 % between seeds (TikTok .0452-.0478): a lead that small is a tie, and a tie keeps
# the config `recsys train` would use anyway (BENCHMARKS.md, "`recsys tune`: the default next to the tuned config").
MIN_RELATIVE_GAIN = 0.01


@dataclass
class Confirmation:
    """The second-seed trials of the base and of the best challenger (empty when the base won outright)."""
    seed: int
    base: float
    challenger: float
    challenger_overrides: list[str]
    won: bool

    @property
    def verdict(self) -> str:
        return "the challenger is kept" if self.won else \
            f"the base is kept (a challenger must lead its mean by more than {MIN_RELATIVE_GAIN:.0%})"


@dataclass
class TuneResult:
    best: TrainConfig
    trials: list[Trial] = field(default_factory=list)
    written: Path | None = None
    confirmation: Confirmation | None = None


def search_space(base: TrainConfig) -> dict[str, list[Any]]:
    """Candidate values per knob, centred on the base config."""
    dim = base.model.dim
    if base.loss.step == "sequence":  # the next-item regime: no graph (a prefix must not see later events)
        return {"train.lr": [5e-4, 1e-3, 2e-3, 4e-3], "train.weight_decay": [0.0, 1e-5, 1e-4],
                "model.dim": sorted({max(16, dim // 2), dim, min(512, dim * 2)}),
                "model.attention_dropout": [0.1, 0.2, 0.5], "model.attention_blocks": [1, 2, 3],
                "model.recency_half_life": [0.0, 3.0, 10.0]}
    space: dict[str, list[Any]] = {
        "train.lr": [0.003, 0.01, 0.02],
        "train.weight_decay": [1e-4, 1e-3, 5e-3, 1e-2],
        "model.dim": sorted({max(16, dim // 2), dim, min(512, dim * 2)}),
        "model.propagation_layers": [1, 2, 3],
        "loss.kind": ["softmax", "full_softmax"],
        # What separated the regimes on the unseen datasets (BENCHMARKS.md, issue 16 "Generalisation"):
        # a fixed temperature won on sparse data and lost on dense; logQ x1 lost to x3 on sparse.
        "model.learn_temperature": [True, False],
        "loss.logq_correction": [1.0, 3.0, 5.0],
    }
    if base.data.split == "leave-last-out":
        space["model.recency_half_life"] = [0.0, 3.0, 10.0]
    return space


def sample_overrides(space: dict[str, list[Any]], rng: random.Random, knobs: int = 3) -> list[str]:
    """`knobs` randomly chosen settings, each set to a random candidate."""
    keys = rng.sample(sorted(space), k=min(knobs, len(space)))
    return [f"{key}={_literal(rng.choice(space[key]))}" for key in keys]


def config_key(raw: dict[str, Any]) -> str:
    """A canonical text of a config: two override lists giving the same config give the same key."""
    return json.dumps(raw, sort_keys=True, default=str)


def untried_overrides(space: dict[str, list[Any]], rng: random.Random, base_raw: dict[str, Any], tried: set[str],
                      attempts: int = 200) -> tuple[list[str], dict[str, Any]] | None:
    """A sample whose resulting config is valid and has not been trained yet, with that config; None once the
    space looks exhausted (`attempts` draws in a row all repeated a trained config or broke a config rule).

    Why the validity check: knobs are drawn independently, and some values exclude a base setting (TikTok's
    config sets `loss.reverse_weight`, which `loss.kind = "full_softmax"` refuses); such a draw is skipped like a
    repeat instead of ending the search with a validation error after its trials were paid for.
    """
    for _ in range(attempts):
        changes = sample_overrides(space, rng)
        raw = apply_overrides(copy.deepcopy(base_raw), changes)
        if config_key(raw) in tried:
            continue
        try:
            TrainConfig.model_validate(raw)
        except ValidationError:
            continue
        return changes, raw
    return None


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def tune(dataset: str, budget_minutes: float, out: Path | None = None, seed: int = 0,
         max_trials: int | None = None, overrides: list[str] | None = None) -> TuneResult:
    """Search while `budget_minutes` last (at least one trial); write and return the best config."""
    base = load_config(None, dataset, overrides)
    base_raw = base.model_dump(mode="json", exclude={"origin"})
    # trials compare towers: one each, without the closed-form member (fitted after them; its weight is chosen
    # on valid by the `recsys train` that uses the written config) and without a refit (it changes no valid score)
    one = {"train": {**base_raw["train"], "ensemble": 1, "refit": False}, "ease": EaseMemberConfig().model_dump(mode="json")}
    metric = base.train.select_metric
    data = build_training_data(base.data)
    rng = random.Random(seed)
    space = search_space(base)
    deadline = time.monotonic() + budget_minutes * 60
    trials: list[Trial] = []
    tried: set[str] = set()
    start_raw = copy.deepcopy({**base_raw, **one})
    best_raw, best_score, best_changes = start_raw, -1.0, []
    confirmation: Confirmation | None = None
    with tempfile.TemporaryDirectory(prefix="recsys-tune-") as tmp:

        def run_trial(changes: list[str], raw: dict[str, Any], label: str) -> Trial:
            config = TrainConfig.model_validate(raw)
            began = time.perf_counter()
            result = train(config, Path(tmp) / f"trial-{label}", resume=False, progress=False, data=data,
                           read_test=False)  # valid chooses; test stays unread
            settled = None
            if "pilot" in result.metrics:  # the base's pilot (trial 0) decides its candidates once for the search
                chosen = config.train.pilot[result.metrics["pilot"]["chosen"]]
                settled = config.with_settings(chosen).model_dump(mode="json", exclude={"origin"})
            return Trial(changes, float(result.metrics["valid"][metric]), result.best_epoch,
                         time.perf_counter() - began, settled)

        while True:
            if trials:
                mean_s = sum(t.seconds for t in trials) / len(trials)
                if time.monotonic() + 2 * mean_s >= deadline:  # leave room for the confirmation
                    break
                if max_trials is not None and len(trials) >= max_trials:
                    break
                drawn = untried_overrides(space, rng, start_raw, tried)
                if drawn is None:
                    log.info("every draw repeats a trained config: the search space is exhausted")
                    break
                changes, raw = drawn
            else:
                changes, raw = [], start_raw
            tried.add(config_key(raw))
            trial = run_trial(changes, raw, str(len(trials)))
            trials.append(trial)
            if trial.settled is not None:  # later trials vary the base as its pilot settled it (no second pilot)
                start_raw = raw = trial.settled
                tried.add(config_key(raw))
            log.info("trial %d %s: valid %s %.4f (epoch %d, %.0f s)", len(trials) - 1, " ".join(changes) or "(base)",
                     metric, trial.valid, trial.best_epoch, trial.seconds)
            if trial.valid > best_score:
                best_score, best_raw, best_changes = trial.valid, raw, changes
        if best_changes:  # a challenger led: train it and the base with another seed before believing it
            confirm_seed = int(base_raw["train"]["seed"]) + 1
            reseed = [f"train.seed={confirm_seed}"]
            base_again = run_trial(reseed, apply_overrides(copy.deepcopy(start_raw), reseed), "confirm-base")
            challenger_again = run_trial(best_changes + reseed, apply_overrides(copy.deepcopy(best_raw), reseed),
                                         "confirm-challenger")
            base_mean = (trials[0].valid + base_again.valid) / 2
            challenger_mean = (best_score + challenger_again.valid) / 2
            won = challenger_mean > base_mean * (1 + MIN_RELATIVE_GAIN)
            confirmation = Confirmation(confirm_seed, base_again.valid, challenger_again.valid, best_changes, won)
            log.info("confirmation with seed %d: base %.4f (mean %.4f), %s %.4f (mean %.4f): %s", confirm_seed,
                     base_again.valid, base_mean, " ".join(best_changes), challenger_again.valid, challenger_mean,
                     confirmation.verdict)
            if not won:
                best_raw = start_raw
    best_raw = {**best_raw, "train": {**best_raw["train"], "ensemble": base.train.ensemble, "refit": base.train.refit},
                "ease": base_raw["ease"]}
    best = TrainConfig.model_validate(best_raw)
    target = out if out is not None else beside_dataset_path(dataset)
    write_config(best, target, trials, metric, base.origin, confirmation)
    return TuneResult(best, trials, target, confirmation)


def write_config(config: TrainConfig, path: Path, trials: list[Trial], metric: str, base_origin: str,
                 confirmation: Confirmation | None = None) -> None:
    """The winning config as TOML, with the trial table as comments (what was tried, what won)."""
    body = config.model_dump(mode="json", exclude={"origin"})
    body["data"].pop("dataset", None)  # the file names its dataset by where it lies
    lines = [f"# Written by `recsys tune`: best valid {metric} of {len(trials)} one-tower trials around",
             f"# {base_origin}.", "# trial | valid | best epoch | seconds | overrides"]
    lines += [f"# {i} | {t.valid:.4f} | {t.best_epoch} | {t.seconds:.0f} | {' '.join(t.overrides) or '(base)'}"
              for i, t in enumerate(trials)]
    if confirmation is not None:
        lines.append(f"# confirmation, seed {confirmation.seed}: base {confirmation.base:.4f}, "
                     f"{' '.join(confirmation.challenger_overrides)} {confirmation.challenger:.4f}: {confirmation.verdict}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + tomli_w.dumps(_drop_none(body)))


def _drop_none(value: Any) -> Any:
    """TOML has no null: unset optional keys are left out (their defaults are None)."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
