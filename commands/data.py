"""`recsys data validate`: report every problem of a dataset (file, row, column, what) in one run."""
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


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
