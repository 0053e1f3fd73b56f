"""Command `recsys serve`: run the feed API (FastAPI on uvicorn with uvloop + httptools)."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        run: Path = typer.Option(..., "--run", help="run directory of the model to serve (variant A)"),
        port: int = typer.Option(None, "--port", help="port (default: RECSYS_SERVE_PORT or 8000)"),
        host: str = typer.Option(None, "--host", help="interface (default: RECSYS_SERVE_HOST or 127.0.0.1)"),
        run_b: Path = typer.Option(None, "--run-b", help="second run directory: A/B test against it (variant B)"),
        split_b: float = typer.Option(None, "--split-b", min=0.0, max=1.0, help="share of users on variant B"),
        log_dir: Path = typer.Option(None, "--log-dir", help="where exposures/events/experiment logs go"),
        index: str = typer.Option(None, "--index", help="auto | flat | hnsw | ivf"),
    ) -> None:
        """Serve recommendations, similar items, content search and event ingestion over HTTP."""
        import uvicorn

        from serving.config import ServingSettings
        from serving.main import create_app

        overrides = {"run_dir": run, "port": port, "host": host, "run_dir_b": run_b, "split_b": split_b,
                     "log_dir": log_dir, "index_kind": index}
        settings = ServingSettings(**{k: v for k, v in overrides.items() if v is not None})
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                    access_log=False, log_level="info", timeout_graceful_shutdown=10)
