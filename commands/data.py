"""`recsys data validate` / `recsys data export`: check a dataset; write its split for other libraries.

    recsys data validate --dataset ml-100k
    recsys data export --format recbole --dataset ml-100k --out DIR [--split-strategy ...] [--tie-break ...]
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)


@data_app.command("validate")
def validate(
    path: Path | None = typer.Argument(None, help="A dataset folder (TikTok, GroupLens, RecBole or items/interactions layout)."),
    dataset: str | None = typer.Option(None, "--dataset", help="A registered dataset under RECSYS_DATA_DIR (ml-100k, tiktok)."),
) -> None:
    """Load a dataset with every check on; exit 1 listing all problems, 0 with a summary when clean."""
    from recsys.data import DataValidationError, load_path
    from recsys.data.registry import dataset_path

    console = Console(soft_wrap=True)  # one line per finding, whatever the terminal width
    if (path is None) == (dataset is None):
        raise typer.BadParameter("give either PATH or --dataset NAME")
    folder = dataset_path(dataset) if dataset else path
    try:
        ds = load_path(folder, name=dataset)
    except DataValidationError as err:
        console.print(f"[red]{folder}: {len(err.problems)} problem(s)[/red]")
        for problem in err.problems:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    media = {m: int(v.sum()) for m, v in ds.feature_mask.items()}
    console.print(f"[green]{folder}: OK[/green] — {ds.n_items} items, {ds.n_users} users, "
                  f"{ds.interactions.height} interactions, items per medium {media}, version {ds.version}")
    if ds.timestamps_synthetic:
        console.print("  no timestamps: the interactions file's row order is used as time order "
                      "(leave-last-out and history windows follow it)", highlight=False)


@data_app.command("export")
def export(
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset (ml-100k, tiktok) or a dataset folder."),
    out: Path = typer.Option(..., "--out", help="Folder to write <name>.train.inter, .valid.inter, .test.inter into."),
    fmt: str = typer.Option("recbole", "--format", help="Output format (recbole: atomic benchmark files)."),
    split_strategy: str | None = typer.Option(None, "--split-strategy", help=(
        "leave-last-out | temporal | predefined (default: the dataset's own split, else leave-last-out).")),
    tie_break: str = typer.Option("file-order", "--tie-break", help=(
        "leave-last-out tie rule for equal timestamps: file-order (RecBole's) or item-index.")),
    name: str | None = typer.Option(None, "--name", help="RecBole dataset name / file stem (default: the dataset's)."),
) -> None:
    """Write exactly the split `recsys train` and `recsys evaluate` use, as files another library reads."""
    from recsys.data import DataValidationError, load_dataset
    from recsys.data.recbole_export import RECBOLE_CONFIG, export_recbole
    from recsys.data.splits import TIE_BREAKS

    console = Console()
    if fmt != "recbole":
        _fail(console, f"unknown --format {fmt!r} (supported: recbole)")
    if split_strategy not in (None, "leave-last-out", "temporal", "predefined"):
        _fail(console, f"unknown --split-strategy {split_strategy!r} (expected leave-last-out, temporal or predefined)")
    if tie_break not in TIE_BREAKS:
        _fail(console, f"unknown --tie-break {tie_break!r} (expected one of: {', '.join(TIE_BREAKS)})")
    try:
        ds = load_dataset(dataset)
    except DataValidationError as err:
        _fail(console, "; ".join(str(p) for p in err.problems[:3]))
    if split_strategy == "predefined" and "split" not in ds.interactions.columns:
        _fail(console, f"dataset {ds.name} has no predefined split; use --split-strategy leave-last-out or temporal")
    files = export_recbole(ds, out, split_strategy, tie_break, name)  # type: ignore[arg-type]
    for part, path in files.items():
        rows = sum(1 for _ in path.open()) - 1
        console.print(f"{part}: {rows} interactions -> {path}", highlight=False, soft_wrap=True)
    console.print(f"RecBole: dataset {name or ds.name}, data_path {Path(out).parent}, {RECBOLE_CONFIG}", markup=False, highlight=False,
                  soft_wrap=True)


def _fail(console: Console, message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
