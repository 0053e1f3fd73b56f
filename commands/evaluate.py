"""`recsys evaluate`: judge a run directory, or a named baseline, on a dataset's held-out split.

    recsys evaluate --run RUN_DIR --split test --json [--task ranking|cross-media|cold-start]
    recsys evaluate --baseline most-popular|itemknn|bpr-mf --dataset NAME --split test --json

With `--json` exactly one JSON object goes to stdout (logs go to stderr), so scripts can pipe it.
Input problems (bad run directory, unknown dataset, split, task or baseline) end with a one-line
message on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)


def evaluate(
    run: Path | None = typer.Option(None, "--run", help="A run directory written by `recsys train`."),
    baseline: str | None = typer.Option(None, "--baseline", help="A named baseline: most-popular, itemknn, bpr-mf, ..."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset for --baseline (registered name or folder)."),
    split: str = typer.Option("test", "--split", help="Held-out split to rank: valid or test."),
    task: str = typer.Option("ranking", "--task", help="ranking | cross-media | cold-start."),
    split_strategy: str | None = typer.Option(None, "--split-strategy",
                                              help="For --baseline: leave-last-out | temporal | predefined "
                                                   "(default: the dataset's own split, else leave-last-out)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object to stdout."),
) -> None:
    """Full-ranking offline evaluation (Recall/NDCG/MRR/HitRate@K, coverage, per media, cold start)."""
    from recsys.artifact import RunDirError
    from recsys.data import DataValidationError
    from training.evaluation import evaluate_baseline, evaluate_run, to_jsonable
    from training.evaluation_protocol import EvaluationError

    if (run is None) == (baseline is None):
        _fail("give either --run RUN_DIR or --baseline NAME --dataset NAME")
    if baseline is not None and dataset is None:
        _fail("--baseline needs --dataset NAME")
    try:
        if run is not None:
            report = evaluate_run(run, split=split, task=task)
        else:
            report = evaluate_baseline(baseline, dataset, split=split, task=task, split_strategy=split_strategy)
    except DataValidationError as err:
        _fail("; ".join(str(p) for p in err.problems[:3]) + (f" (+{len(err.problems) - 3} more)" if len(err.problems) > 3 else ""))
    except (RunDirError, EvaluationError) as err:
        _fail(str(err).replace("\n", " "))
    report = to_jsonable(report)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print_table(report)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print_table(report: dict) -> None:
    """Human view: one row per metric, one column per group.

    `main` is the task's headline (everything for ranking, among cold items for cold-start),
    then each media type, cold start, or the among-all-items view.
    """
    from rich.console import Console
    from rich.table import Table

    groups: dict[str, dict] = {"main": report}
    groups.update({f"media {k}": v for k, v in (report.get("by_media") or {}).items()})
    for name in ("cold_start", "all_items"):
        if isinstance(report.get(name), dict):
            groups[name] = report[name]
    metrics = [k for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics += [k for g in groups.values() for k, v in g.items()
                if isinstance(v, (int, float)) and k not in metrics and not isinstance(v, bool)]
    metrics = list(dict.fromkeys(metrics))
    table = Table(title=f"{report.get('model_version')} on {report.get('dataset')} / {report.get('split')} ({report.get('task')})")
    table.add_column("metric")
    for name in groups:
        table.add_column(name, justify="right")
    for metric in metrics:
        table.add_row(metric, *[_fmt(g.get(metric)) for g in groups.values()])
    for key in ("note",):
        if report.get(key):
            table.caption = str(report[key])
    Console().print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
