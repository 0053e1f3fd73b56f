"""`recsys items add --run RUN --from FOLDER`: add many items to a run's live catalogue.

FOLDER has a dataset's items table (`items.parquet`, `items.csv` or `items.tsv`: `item_id`,
optional `title`, `text`, `image_uri`, `audio_uri`; media paths relative to FOLDER) and, for
precomputed media, optional `<medium>_feat.npy` with one row per table row. Every item goes
through the same encoders, content path and durable log as `PUT /v1/items/{id}`, so a running
server picks them up within a request and a restarted one replays them. Failures do not stop the
run: each is reported (item id, file, reason) on screen and in `--report`. Resumable: an item
already logged from the same row and files is skipped.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer


def _table(folder: Path):  # noqa: ANN202 - a polars DataFrame
    import polars as pl

    for name in ("items.parquet", "items.csv", "items.tsv"):
        path = folder / name
        if path.exists():
            if path.suffix == ".parquet":
                return pl.read_parquet(path), path
            return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",", infer_schema=False), path
    raise FileNotFoundError(f"{folder}: no items.parquet, items.csv or items.tsv")


def _source_key(row: dict, files: dict[str, Path], vectors: dict[str, list[float]]) -> str:
    """Fingerprint of what an item is made from (row values, file sizes and times, vectors)."""
    parts = {"row": {k: v for k, v in row.items() if v is not None},
             "files": {m: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for m, p in files.items() if p.exists()},
             "vectors": {m: hashlib.sha256(json.dumps(v).encode()).hexdigest() for m, v in vectors.items()}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def add(run: Path = typer.Option(..., "--run", help="Run directory whose encoders and content path embed the items."),
        folder: Path = typer.Option(..., "--from", help="Folder with items.{parquet,csv,tsv} and media files."),
        report: Path = typer.Option(Path("artifacts/items-add-failures.csv"), "--report",
                                    help="Where the per-item failure report (item_id,file,reason) is written."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")) -> None:
    """Embed and add every item of FOLDER to the run's live catalogue (resumable)."""
    import csv

    import numpy as np
    from rich.console import Console
    from rich.progress import track

    from recsys.artifact import RunDirError
    from serving.catalogue_sync import sync
    from serving.catalogue_write import ItemInput, check_input, encoder_outputs, item_digest, put_op
    from serving.errors import ServingError
    from serving.retriever import Retriever

    console = Console(stderr=True)
    try:
        table, table_path = _table(folder)
        retriever = Retriever.load(run)
    except (FileNotFoundError, RunDirError, OSError) as err:
        console.print(f"[red]items add: {err}[/red]", highlight=False)
        raise typer.Exit(2)
    if "item_id" not in table.columns:
        console.print(f"[red]items add: {table_path}: missing column 'item_id'[/red]", highlight=False)
        raise typer.Exit(2)
    log = retriever.catalogue_log
    features = {m: np.load(folder / f"{m}_feat.npy", allow_pickle=False) for m in ("text", "image", "audio")
                if (folder / f"{m}_feat.npy").exists()}
    for medium, matrix in features.items():
        if matrix.ndim != 2 or matrix.shape[0] != table.height:
            console.print(f"[red]items add: {medium}_feat.npy has shape {matrix.shape}, expected "
                          f"({table.height}, d)[/red]", highlight=False)
            raise typer.Exit(2)
    done = {item_id: op.get("source") for item_id, op in log.current().items()}
    failures: list[tuple[str, str, str]] = []
    added = skipped = 0
    rows = table.iter_rows(named=True)
    for number, row in enumerate(track(rows, total=table.height, description="adding items", disable=not progress,
                                       console=console), start=1):
        item_id = str(row.get("item_id") or "").strip()
        where = f"{table_path.name} row {number}"
        if not item_id:
            failures.append(("", where, "empty item_id"))
            continue
        files = {m: folder / str(row[f"{m}_uri"]) for m in ("image", "audio")
                 if row.get(f"{m}_uri") not in (None, "")}
        vectors = {m: [float(x) for x in matrix[number - 1]] for m, matrix in features.items()
                   if np.isfinite(matrix[number - 1]).all() and np.any(matrix[number - 1])}
        source = _source_key(row, files, vectors)
        if done.get(item_id) == source:
            skipped += 1
            continue
        item = ItemInput(vectors=vectors, metadata={k: row[k] for k in ("title",) if row.get(k)})
        try:
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise ServingError(422, "missing_file", f"file not found: {missing[0]}")
            for medium, path in files.items():
                item.files[medium] = path.read_bytes()
            if row.get("text"):
                item.files["text"] = str(row["text"])
            check_input(item)
            outputs = encoder_outputs(retriever, item, {})
            from serving.catalogue_sync import item_vector

            vector = item_vector(retriever, {m: v for m, (_, v) in outputs.items()})
        except ServingError as err:
            failures.append((item_id, next((str(p) for p in files.values()), where), err.message))
            continue
        except Exception as err:  # noqa: BLE001  (one bad item must not stop a bulk load)
            failures.append((item_id, where, f"{type(err).__name__}: {err}"))
            continue
        logged = {m: {key: [round(float(x), 7) for x in v]} for m, (key, v) in outputs.items()}
        stored = {m: log.save_media(d.encode("utf-8") if isinstance(d, str) else d) for m, d in item.files.items()}
        op = log.append(put_op(item_id, item, logged, stored, item_digest(item, logged), source=source))
        sync(retriever, {op["seq"]: vector})
        added += 1
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "file", "reason"])
        writer.writerows(failures)
    for item_id, file, reason in failures[:20]:
        console.print(f"  failed: {item_id or '?'} ({file}): {reason}", highlight=False, soft_wrap=True)
    console.print(f"items add: {added} added, {skipped} already there, {len(failures)} failed "
                  f"(report: {report}); model {retriever.version}, log {log.path}", highlight=False)
    if failures and not added and not skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    items = typer.Typer(help="The live catalogue: add items to a run's catalogue in bulk.", no_args_is_help=True)
    items.command("add")(add)
    app.add_typer(items, name="items")
