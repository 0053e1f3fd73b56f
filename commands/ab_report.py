"""`recsys ab-report`: compare two runs offline, an online experiment's logs, or a candidate run off-policy;
write HTML + JSON + Markdown that lead with the decision (ship / dont_ship / keep_running).

    recsys ab-report --a RUN_A --b RUN_B --split test --out report.html        # offline, paired users
    recsys ab-report --experiment LOG_DIR --out report.html                    # online (A/B or interleaved logs)
    recsys ab-report --ope --logs LOG_DIR --policy RUN_DIR --out report.html   # off-policy estimate of RUN_DIR

Bad input (missing directory, empty or malformed log, runs of different data) exits 1 with a
message naming the file and line; usage mistakes exit 2. Neither prints a traceback (`-v` logs
one for unexpected failures).
"""
from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

log = logging.getLogger(__name__)

_USAGE = ("give one of: --a RUN_A --b RUN_B (offline), --experiment LOG_DIR (online), "
          "or --ope --logs LOG_DIR --policy RUN_DIR (off-policy)")


def ab_report(
    a: Path | None = typer.Option(None, "--a", help="Control run directory (offline)."),
    b: Path | None = typer.Option(None, "--b", help="Treatment run directory (offline)."),
    split: str = typer.Option("test", "--split", help="Split both runs are evaluated on (offline)."),
    experiment: Path | None = typer.Option(None, "--experiment", help="Log directory with exposures.jsonl, events.jsonl "
                                           "and optionally experiment.json (online)."),
    ope: bool = typer.Option(False, "--ope", help="Off-policy evaluation of --policy on the logged traffic of --logs."),
    logs: Path | None = typer.Option(None, "--logs", help="Serving log directory with propensities (with --ope)."),
    policy: Path | None = typer.Option(None, "--policy", help="Candidate run directory to evaluate (with --ope)."),
    out: Path = typer.Option(..., "--out", help="HTML report path; <stem>.json and <stem>.md are written beside it."),
) -> None:
    """Write an A/B report: the decision first, then metric differences with CIs, sequential monitoring,
    guardrails, interleaving or off-policy estimates, SRM/power warnings and plots."""
    err = Console(stderr=True)
    offline = a is not None or b is not None
    modes = [offline, experiment is not None, ope or logs is not None or policy is not None]
    if sum(modes) != 1 or (offline and (a is None or b is None)) or (modes[2] and not (ope and logs and policy)):
        raise typer.BadParameter(_USAGE)
    if out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter(f"--out must end in .html (got {out.name}); the .json and .md are written beside it")

    from training.ab.errors import ReportInputError
    from training.ab.render import console_lines, write_report
    try:
        if offline:
            from training.ab.offline import analyse_runs
            report = analyse_runs(a, b, split)
        elif experiment is not None:
            from training.ab.online import analyse_online
            report = analyse_online(experiment)
        else:
            from training.ab.ope import analyse_ope
            report = analyse_ope(logs, policy)
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
    lines = console_lines(report)
    console.print(f"[bold]{lines[0]}[/bold]", highlight=False, soft_wrap=True)
    for w in report.warnings:
        style = "bold red" if w.severity == "error" else "yellow"
        console.print(f"[{style}]{w.code}[/{style}]: {w.message}", highlight=False, soft_wrap=True)
    for line in lines[1:]:
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"[green]wrote[/green] {paths['html']}, {paths['json']}, {paths['md']}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("ab-report")(ab_report)
