"""Command `recsys serve`: run the feed API (FastAPI on uvicorn with uvloop + httptools)."""
from __future__ import annotations

import os
import shutil
import tempfile
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
        index: str = typer.Option(None, "--index", help="auto | flat | hnsw | ivf | ivf_sq8 | ivf_pq (auto: by "
                                                       "catalogue size and memory; GET /admin/model says which)"),
        workers: int = typer.Option(None, "--workers", min=1, max=64,
                                    help="server processes (default: RECSYS_SERVE_WORKERS or 1); they share Redis, "
                                         "the logs, the catalogue and the index file, each holds the model"),
        materialize: bool = typer.Option(False, "--materialize",
                                         help="first materialise the online features of the run's dataset and "
                                              "window when the online store cannot serve it (what /readyz names)"),
    ) -> None:
        """Serve recommendations, similar items, content search and event ingestion over HTTP.

        Writes and admin calls need RECSYS_SERVE_API_KEY (header X-API-Key); without one the server
        runs in dev mode (open, loopback only) and says so in a warning."""
        import uvicorn
        from pydantic import ValidationError

        from recsys.artifact import RunDirError
        from serving.config import ServingConfigError, ServingSettings
        from serving.main import create_app

        overrides = {"run_dir": run, "port": port, "host": host, "run_dir_b": run_b, "split_b": split_b,
                     "log_dir": log_dir, "index_kind": index, "workers": workers}
        try:  # models load before the port opens: a broken run is one line, not a start-up traceback
            settings = ServingSettings(**{k: v for k, v in overrides.items() if v is not None})
            if settings.workers == 1:
                app = create_app(settings, preload=True)
            else:  # the workers build their apps from the environment (serving.main.worker_app)
                worker_dir = Path(tempfile.mkdtemp(prefix="recsys-serve-workers-"))
                (worker_dir / "metrics").mkdir()
                overrides["worker_dir"] = worker_dir  # model switches announced to every worker
                for name, value in overrides.items():
                    if value is not None:
                        os.environ[f"RECSYS_SERVE_{name.upper()}"] = str(Path(value).resolve()) \
                            if isinstance(value, Path) else str(value)
                problem = _check_in_subprocess()
                if problem:
                    shutil.rmtree(worker_dir, ignore_errors=True)
                    typer.echo(f"recsys serve: {problem}", err=True)
                    raise typer.Exit(2)
                # after the load check (its series must not count): /metrics sums the workers' series
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(worker_dir / "metrics")
        except (RunDirError, ServingConfigError, ValidationError, OSError) as err:
            message = _one_line(err) if not isinstance(err, ValidationError) else "invalid settings: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            typer.echo(f"recsys serve: {message}", err=True)
            raise typer.Exit(2) from None
        problem = _redis_cluster_problem()
        if problem:
            typer.echo(f"recsys serve: {problem}", err=True)
            raise typer.Exit(2)
        if materialize:
            for run_dir in (settings.run_dir, settings.run_dir_b):
                if run_dir is not None:
                    materialize_for(Path(run_dir))
        options = dict(host=settings.host, port=settings.port, loop="uvloop", http="httptools", access_log=False,
                       log_level="info", timeout_graceful_shutdown=10)
        if settings.workers == 1:
            uvicorn.run(app, **options)
            return
        try:
            uvicorn.run("serving.main:worker_app", factory=True, workers=settings.workers,
                        timeout_worker_healthcheck=settings.worker_healthcheck_s, **options)
        finally:
            shutil.rmtree(worker_dir, ignore_errors=True)


def _redis_cluster_problem() -> str | None:
    """Why the configured Redis Cluster cannot be used now, or None. A single node may be down at
    start (the API starts degraded and recovers); a cluster client needs a node to learn the slot
    map from, so a cluster that no node answers for is one line here, not a start-up traceback."""
    from recsys.config import get_settings  # noqa: PLC0415
    from feature_store.redis_server import redis_client  # noqa: PLC0415
    from serving.redis_link import REDIS_ERRORS  # noqa: PLC0415

    shared = get_settings()
    if not shared.redis_cluster:
        return None
    if not shared.redis_url:
        return "RECSYS_REDIS_CLUSTER=true needs REDIS_URL naming a node of the cluster"
    try:
        client = redis_client(shared.redis_url, cluster=True, socket_connect_timeout=5, socket_timeout=5)
        client.close()
    except REDIS_ERRORS as err:
        return (f"Redis Cluster at {shared.redis_url} is unreachable ({_one_line(err)}); start it, "
                "or unset RECSYS_REDIS_CLUSTER for a single node")
    return None


def _check_in_subprocess() -> str | None:
    """Load the run(s) once in a short-lived process, as a worker will: None when they load, else the
    one-line reason. The supervisor of N workers then holds no model of its own (memory a process
    gives back only when it exits), and an HNSW/IVF index is built into the shared index folder
    once, before the workers map it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_load_check).result()


def _load_check() -> str | None:
    from recsys.artifact import RunDirError
    from serving.config import ServingConfigError
    from serving.main import worker_app

    try:
        worker_app()
    except (RunDirError, ServingConfigError, OSError) as err:
        return _one_line(err)
    return None


def materialize_for(run_dir: Path) -> None:
    """Materialise the online store for a run when it cannot serve it (no features, another dataset
    version or window): the command `/readyz` would name, run here. Prints what it did."""
    import json

    from rich.console import Console

    from commands.features import _or_exit
    from feature_store.store import FeatureStore, run_window

    console = Console()
    meta = json.loads((run_dir / "run.json").read_text())
    store = FeatureStore(run_window(meta))
    problems = _or_exit(console, lambda: store.check_run(meta))
    if not problems:
        console.print(f"online store (namespace '{store.online.namespace}') already serves {meta['model_version']}: "
                      "nothing to materialise", highlight=False, soft_wrap=True)
        return
    console.print(f"materialising online features for {meta['model_version']}: {problems[0]}", highlight=False,
                  soft_wrap=True)
    report = _or_exit(console, lambda: store.materialize(meta["dataset"], train_split=meta.get("split_strategy")))
    online = report.online
    console.print(f"  {report.dataset} version {report.dataset_version}, window {report.history_cap}: online version "
                  f"{online.version if online else '-'} ({online.users if online else 0} users) in "
                  f"{report.total_seconds:.1f}s", highlight=False, soft_wrap=True)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
