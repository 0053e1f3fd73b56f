"""`recsys ab-report`: compare two runs offline or an online experiment's logs, write HTML + JSON + Markdown.

    recsys ab-report --a RUN_A --b RUN_B --split test --out report.html   # offline, paired users
    recsys ab-report --experiment LOG_DIR --out report.html               # online, serving logs

Bad input (missing directory, empty or malformed log) exits 1 with a message naming the file and
line; usage mistakes exit 2. Neither prints a traceback (`-v` logs one for unexpected failures).
"""
from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

log = logging.getLogger(__name__)


def ab_report(
    a: Path | None = typer.Option(None, "--a", help="Control run directory (offline)."),
    b: Path | None = typer.Option(None, "--b", help="Treatment run directory (offline)."),
    split: str = typer.Option("test", "--split", help="Split both runs are evaluated on (offline)."),
    experiment: Path | None = typer.Option(None, "--experiment", help="Log directory with exposures.jsonl, events.jsonl "
                                           "and optionally experiment.json (online)."),
    out: Path = typer.Option(..., "--out", help="HTML report path; <stem>.json and <stem>.md are written beside it."),
) -> None:
    """Write an A/B report: metric differences with CIs and p-values, SRM/power warnings, plots."""
    err = Console(stderr=True)
    offline = a is not None or b is not None
    if offline == (experiment is not None) or (offline and (a is None or b is None)):
        raise typer.BadParameter("give either --a RUN_A --b RUN_B (offline) or --experiment LOG_DIR (online)")
    if out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter(f"--out must end in .html (got {out.name}); the .json and .md are written beside it")

    from training.ab.errors import ReportInputError
    from training.ab.render import console_lines, write_report
    try:
        if offline:
            from training.ab.offline import analyse_runs
            report = analyse_runs(a, b, split)
        else:
            from training.ab.online import analyse_online
            report = analyse_online(experiment)
        paths = write_report(report, out)
    except (ReportInputError, OSError) as problem:
        err.print(f"[red]ab-report: {problem}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except Exception as problem:  # never a traceback on the console; -v puts it in the log
        log.debug("ab-report failed", exc_info=True)
        err.print(f"[red]ab-report failed: {type(problem).__name__}: {problem} (run with -v for details)[/red]",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    console = Console()
    for w in report.warnings:
        style = "bold red" if w.severity == "error" else "yellow"
        console.print(f"[{style}]{w.code}[/{style}]: {w.message}", highlight=False, soft_wrap=True)
    for line in console_lines(report):
        console.print(line, highlight=False)
    console.print(f"[green]wrote[/green] {paths['html']}, {paths['json']}, {paths['md']}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("ab-report")(ab_report)
