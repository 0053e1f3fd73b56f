"""`recsys tune`: search the training config on `valid` within a time budget; the next `recsys train` uses it.

    recsys tune --dataset path/to/shop --budget-minutes 30        # writes path/to/shop.toml
    recsys train --dataset path/to/shop --out runs/shop           # config: dataset config .../shop.toml
"""
from __future__ import annotations

from pathlib import Path

import typer


def tune_command(
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset or a dataset folder."),
    budget_minutes: float = typer.Option(..., "--budget-minutes", min=0.0, help="Start trials while this lasts."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the config (default: <folder>.toml beside the dataset)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random search."),
    max_trials: int | None = typer.Option(None, "--max-trials", min=1, help="Stop after this many trials."),
    overrides: list[str] = typer.Option([], "--set", help="Fix a config key for every trial, e.g. --set train.epochs=10."),
) -> None:
    """Random search around the dataset's config (trial 0 = the config itself), one tower per trial."""
    from pydantic import ValidationError
    from rich.console import Console

    from recsys.data import DataValidationError
    from training.tune import tune

    console = Console()
    try:
        result = tune(dataset, budget_minutes, out, seed, max_trials, overrides)
    except DataValidationError as err:
        console.print(f"[red]error:[/red] {'; '.join(str(p) for p in err.problems[:3])}", highlight=False)
        raise typer.Exit(2)
    except (ValidationError, ValueError) as err:
        console.print(f"[red]invalid config:[/red] {err}", highlight=False)
        raise typer.Exit(2)
    metric = result.best.train.select_metric
    for i, trial in enumerate(result.trials):
        console.print(f"trial {i}: valid {metric} {trial.valid:.4f} (epoch {trial.best_epoch}, {trial.seconds:.0f} s) "
                      f"{' '.join(trial.overrides) or '(base config)'}", markup=False, highlight=False, soft_wrap=True)
    c = result.confirmation
    if c is not None:
        console.print(f"confirmation with seed {c.seed}: base {c.base:.4f}, {' '.join(c.challenger_overrides)} "
                      f"{c.challenger:.4f} -> {c.verdict} "
                      "(mean of two seeds each)", markup=False, highlight=False, soft_wrap=True)
    console.print(f"best config -> {result.written}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
