"""Entry point of the `recsys` console script.

Each command group lives in its own module exposing `register(app)`; heavy imports (torch,
FastAPI) happen inside the commands so `recsys --help` stays instant.
"""
from __future__ import annotations

import importlib
import os

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(help="Multimodal two-tower recommender: data, features, embeddings, training, evaluation, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # plain help: descriptions wrap at the terminal width, nothing truncated

COMMAND_MODULES = ("init", "data", "features", "embed", "train", "tune", "evaluate", "compare", "serve", "items",
                   "ab_report", "ab_simulate")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    from recsys.logs import configure_logging

    configure_logging(verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(f"commands.{_name}").register(app)


if __name__ == "__main__":
    app()
