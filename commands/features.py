"""`recsys features ...`: materialise features offline + online, and inspect what serving reads."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

T = TypeVar("T")

# Shared by the commands below: where the online store lives.
REDIS_URL = typer.Option(None, "--redis-url", help="Redis URL (default: REDIS_URL, else local, else embedded).")
NAMESPACE = typer.Option(None, "--namespace", help="Redis key namespace (default: RECSYS_REDIS_NAMESPACE).")

features_app = typer.Typer(help="Feature store: materialise features (Parquet + Redis) and inspect them.",
                           no_args_is_help=True)


@features_app.command("materialize")
def materialize_command(
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset (ml-100k, tiktok) or a dataset folder."),
    history_cap: int | None = typer.Option(None, "--history-cap", min=1,
                                           help="History length kept per user (default: RECSYS_ONLINE_HISTORY_CAP)."),
    item_vectors: Path | None = typer.Option(None, "--item-vectors", exists=True, dir_okay=False,
                                             help=".npy float array (n_items, dim), row i = item_index i."),
    offline_only: bool = typer.Option(False, "--offline-only", help="Write the Parquet tables only (no Redis)."),
    redis_url: str | None = REDIS_URL,
    namespace: str | None = NAMESPACE,
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Users/items per pipelined Redis round trip."),
    train_split: str | None = typer.Option(None, "--train-split", help="Only the train rows of this split strategy "
                                           "(predefined, leave-last-out, temporal): the histories a run trained with "
                                           "that split saw, to serve it exactly as evaluated."),
    held_out: str = typer.Option("valid", "--held-out", help="With --train-split: the rows known when this split "
                                 "(valid or test) is ranked; test on leave-last-out or temporal adds the valid rows, "
                                 "as `recsys evaluate --split test` reads them."),
) -> None:
    """Compute user-history and item features once; write them to Parquet and publish a Redis version."""
    from feature_store.materialize import materialize  # noqa: PLC0415 - keep `recsys --help` instant
    from feature_store.redis_server import connect_redis  # noqa: PLC0415

    console = Console()
    client = None if offline_only else _or_exit(console, lambda: connect_redis(redis_url))
    report = _or_exit(console, lambda: materialize(dataset, history_cap=history_cap, item_vectors=item_vectors,
                                                   client=client, namespace=namespace, offline_only=offline_only,
                                                   batch_size=batch_size, train_split=train_split,
                                                   held_out=held_out))
    rate = report.interactions / report.total_seconds if report.total_seconds else float("nan")
    console.print(f"[green]{report.dataset}[/green] version {report.dataset_version}: "
                  f"{report.interactions} interactions, history cap {report.history_cap}, {report.total_seconds:.1f}s ({rate:,.0f} interactions/s)")
    for name, path in report.offline_tables.items():
        console.print(f"  offline {name}: {path}", highlight=False, soft_wrap=True)
    if report.online is not None:
        online = report.online
        console.print(f"  online version {online.version} (previous {online.previous}, deleted "
                      f"{', '.join(online.deleted) or 'none'}): {online.users} users, {online.items} items")


@features_app.command("show-user")
def show_user(
    user_id: str = typer.Argument(..., help="The dataset's user id."),
    n: int = typer.Option(10, "--n", min=1, help="How many recent items to show."),
    redis_url: str | None = REDIS_URL,
    namespace: str | None = NAMESPACE,
) -> None:
    """Print what serving reads for a user: recent items (newest first) with titles."""
    from feature_store.online import OnlineStore  # noqa: PLC0415
    from feature_store.redis_server import connect_redis  # noqa: PLC0415

    console = Console()
    store = OnlineStore(_or_exit(console, lambda: connect_redis(redis_url)), namespace)
    history = _or_exit(console, lambda: store.get_user_history(user_id, n))
    info = store.version_info()
    console.print(f"namespace '{store.namespace}', version {store.active_version()} "
                  f"({info.get('dataset')} {info.get('dataset_version')}); user {user_id}: "
                  f"{store.get_user_event_count(user_id)} events")
    if not history:
        console.print("no history for this user")
        return
    titles = store.get_item_metadata([item for item, _ in history])
    table = Table("item_id", "timestamp", "title")
    for (item, ts), meta in zip(history, titles):
        table.add_row(item, str(ts), meta.get("title") or "")
    console.print(table)


def _or_exit(console: Console, action: Callable[[], T]) -> T:
    """Run `action`; show a known failure as one red line and exit 1 instead of a traceback."""
    from feature_store.offline import MissingFeaturesError  # noqa: PLC0415
    from feature_store.online import NoActiveVersionError  # noqa: PLC0415
    from feature_store.publish import MaterializationInProgressError  # noqa: PLC0415
    from feature_store.redis_server import RedisUnavailableError  # noqa: PLC0415
    from recsys.data import DataValidationError  # noqa: PLC0415

    try:
        return action()
    except DataValidationError as err:
        console.print(f"[red]dataset problems ({len(err.problems)}):[/red]")
        for problem in err.problems[:20]:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except (RedisUnavailableError, NoActiveVersionError, MissingFeaturesError, MaterializationInProgressError,
            FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
