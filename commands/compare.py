"""`recsys compare --run RUN`: the run next to its baselines in one table, saved with the run.

Each evaluation (the run's, every baseline's, and the optional extra tasks) is written to
`RUN/evaluations/` and the run's `MODEL_CARD.md` is rewritten, so what the demo printed stays
with the model.
"""
from __future__ import annotations

from pathlib import Path

import typer


def compare(
    run: Path = typer.Option(..., "--run", help="A run directory written by `recsys train`."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    baselines: str = typer.Option("most-popular,itemknn", "--baselines",
                                  help="Comma-separated baseline names (most-popular, itemknn, bpr-mf, content-only)."),
    tasks: str = typer.Option("", "--tasks", help="Extra tasks of the run to evaluate and save: cross-media,cold-start."),
) -> None:
    """Evaluate the run and its baselines on the same split; print one table, save every report."""
    from rich.console import Console
    from rich.table import Table

    from recsys.artifact import RunDirError, load_run
    from recsys.data import DataValidationError
    from training.evaluation import evaluate_baseline, evaluate_run, to_jsonable
    from training.evaluation_protocol import EvaluationError
    from training.model_card import HEADLINE, save_evaluation, write_model_card

    console = Console(soft_wrap=True)
    try:
        artifact = load_run(run)
        rows = [("this run", to_jsonable(evaluate_run(run, split=split)))]
        for name in [b.strip() for b in baselines.split(",") if b.strip()]:
            console.print(f"evaluating baseline {name} ...", highlight=False)
            rows.append((name, to_jsonable(evaluate_baseline(name, artifact.dataset, split=split))))
        extra = [(t.strip(), to_jsonable(evaluate_run(run, split=split, task=t.strip())))
                 for t in tasks.split(",") if t.strip()]
    except DataValidationError as err:
        typer.echo(f"error: {'; '.join(str(p) for p in err.problems[:3])}", err=True)
        raise typer.Exit(2)
    except (RunDirError, EvaluationError, KeyError) as err:
        typer.echo(f"error: {str(err).strip(chr(39))}", err=True)
        raise typer.Exit(2)
    for name, report in rows:
        save_evaluation(run, "model" if name == "this run" else name, report)
    for _, report in extra:
        save_evaluation(run, "model", report)
    metrics = [m for m in HEADLINE if any(m in r for _, r in rows)]
    best = {m: max(r.get(m, float("-inf")) for _, r in rows) for m in metrics}
    table = Table(title=f"{artifact.model_version} vs baselines on {artifact.dataset} / {split} (full ranking)")
    table.add_column("model")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, report in rows:
        cells = [f"[bold]{report[m]:.4f}[/bold]" if report.get(m) == best[m] else f"{report.get(m, float('nan')):.4f}"
                 for m in metrics]
        table.add_row(name, *cells)
    console.print(table)
    for task, report in extra:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in report.items() if isinstance(v, float))
        console.print(f"{task}: {shown}", highlight=False)
    console.print(f"saved: {Path(run) / 'evaluations'}/, model card: {write_model_card(run)}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
