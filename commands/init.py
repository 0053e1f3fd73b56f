"""`recsys init PATH [--example]`: start a catalogue of one's own (see docs/your-data.md)."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        path: Path = typer.Argument(..., help="Folder to create (must be new or empty)."),
        example: bool = typer.Option(False, "--example",
                                     help="Write the 30-item example catalogue (photos, texts, WAV clips, 500 interactions)."),
    ) -> None:
        """Write the dataset layout: items.csv, interactions.csv, dataset.toml and media/."""
        from recsys.data.example import write_example_catalogue, write_skeleton

        try:
            folder = write_example_catalogue(path) if example else write_skeleton(path)
        except FileExistsError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2)
        what = "example catalogue (30 items, 50 users, 500 interactions)" if example else "empty catalogue skeleton"
        typer.echo(f"{folder}: wrote the {what}")
        typer.echo(f"next: recsys data validate {folder}   (docs/your-data.md walks through every step)")
