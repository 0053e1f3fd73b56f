"""Reading an online experiment's log directory: `exposures.jsonl`, `events.jsonl` and the
optional `experiment.json`.

The serving layer rotates its logs by size (`exposures.000001.jsonl`, ... then the active
`exposures.jsonl`); every part is read, oldest first, and a gap in the part numbers (old parts
deleted by the rotation cap) becomes a warning, because the report then misses the start.

Optional exposure fields: `propensities` (per shown item, for off-policy evaluation), `teams`
(per shown item, interleaving), `latency_ms`, `status` and `new_items` (guardrails).

The serving layer writes these files; this module is the contract's reader. Loading goes through
polars with a fixed schema (fast on millions of lines). Only when polars rejects a file, or a
required field is missing, do we re-read it line by line, so the error can name the file and line
to fix instead of echoing a parser message.
"""
from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from training.ab.errors import ReportInputError
from training.ab.guardrails import Guardrail, parse_guardrails

log = logging.getLogger(__name__)

EXPOSURES_FILE, EVENTS_FILE, SPEC_FILE = "exposures.jsonl", "events.jsonl", "experiment.json"

EXPOSURE_SCHEMA: dict[str, pl.DataType] = {
    "exposure_id": pl.String(), "ts": pl.Float64(), "user_id": pl.String(), "variant": pl.String(),
    "model_version": pl.String(), "items": pl.List(pl.String()), "propensities": pl.List(pl.Float64()),
    "teams": pl.List(pl.String()), "latency_ms": pl.Float64(), "status": pl.Int64(), "new_items": pl.Int64(),
}
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "ts": pl.Float64(), "user_id": pl.String(), "item_id": pl.String(),
    "event_type": pl.String(),
}
# Fields without which a row cannot be analysed (model_version is informative only).
_REQUIRED = {
    EXPOSURES_FILE: ("exposure_id", "ts", "user_id", "variant", "items"),
    EVENTS_FILE: ("event_id", "ts", "user_id", "item_id", "event_type"),
}
_MAX_LISTED = 5


@dataclass(frozen=True)
class ExperimentSpec:
    """What experiment.json declares: variant weights (for the SRM check), start time, target lift.

    `variants` keeps the file's order; the first variant is the control.
    """

    name: str
    variants: dict[str, float]
    start_ts: float | None = None
    target_lift: float | None = None
    guardrails: dict[str, Guardrail] = field(default_factory=dict)
    mode: str = "ab"  # "ab": users split between variants; "interleave": every slate mixes them (team draft)
    catalogue_size: int | None = None


@dataclass(frozen=True)
class ExperimentLogs:
    """The validated contents of one log directory."""

    log_dir: Path
    exposures: pl.DataFrame
    events: pl.DataFrame
    spec: ExperimentSpec | None
    notes: tuple[str, ...] = ()


def read_experiment(log_dir: Path) -> ExperimentLogs:
    """Load and validate a log directory; raises ReportInputError naming the file (and line)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise ReportInputError(f"experiment log directory not found: {log_dir}")
    exposures, gap_x = read_rotated(log_dir, EXPOSURES_FILE, EXPOSURE_SCHEMA)
    events, gap_e = read_rotated(log_dir, EVENTS_FILE, EVENT_SCHEMA)
    exposures = _check_aligned(log_dir / EXPOSURES_FILE, exposures)
    return ExperimentLogs(log_dir, exposures, events, read_spec(log_dir / SPEC_FILE),
                          tuple(n for n in (gap_x, gap_e) if n))


def log_parts(log_dir: Path, name: str) -> list[tuple[int | None, Path]]:
    """Every file of one log, oldest first: rotated parts (number, path), then the active file (None, path)."""
    stem, _, suffix = name.rpartition(".")
    pattern = re.compile(rf"^{re.escape(stem)}\.(\d{{6,}})\.{re.escape(suffix)}$")
    parts: list[tuple[int | None, Path]] = sorted(
        (int(m.group(1)), p) for p in Path(log_dir).glob(f"{stem}.*.{suffix}") if (m := pattern.match(p.name)))
    active = Path(log_dir) / name
    return parts + ([(None, active)] if active.is_file() else [])


def read_rotated(log_dir: Path, name: str, schema: dict[str, pl.DataType]) -> tuple[pl.DataFrame, str | None]:
    """All parts of one rotated log as one frame, and a note when the oldest parts were deleted."""
    parts = log_parts(log_dir, name)
    if not parts:
        raise ReportInputError(f"{Path(log_dir) / name}: file not found (the serving layer writes it for every experiment)")
    frame = pl.concat([read_jsonl(p, schema, allow_empty=True) for _, p in parts])
    if frame.is_empty():
        raise ReportInputError(f"{Path(log_dir) / name}: no records (empty log); nothing to analyse")
    first, oldest = parts[0]
    gap = None
    if first is not None and first > 1:
        gap = (f"{name}: rotated parts 1-{first - 1} were deleted by the log size cap; records before "
               f"{oldest.name} are missing from this report.")
    return frame, gap


def _check_aligned(path: Path, exposures: pl.DataFrame) -> pl.DataFrame:
    """Per-item lists (propensities, teams) must match the slate; fill deterministic propensities (1.0)."""
    n_items = pl.col("items").list.len()
    for column in ("propensities", "teams"):
        bad = exposures.filter(pl.col(column).is_not_null() & (pl.col(column).list.len() != n_items))
        if bad.height:
            raise ReportInputError(f"{path}: exposure {bad['exposure_id'][0]!r} has {bad[column][0].len()} {column} "
                                   f"for {bad['items'][0].len()} shown items ({bad.height} such records)")
    probs = exposures.select(pl.col("propensities").explode().drop_nulls())
    if probs.height and not probs.select(((pl.col("propensities") > 0) & (pl.col("propensities") <= 1)).all()).item():
        raise ReportInputError(f"{path}: propensities must lie in (0, 1] (the probability the serving policy "
                               "showed that item)")
    return exposures


def read_jsonl(path: Path, schema: dict[str, pl.DataType], allow_empty: bool = False) -> pl.DataFrame:
    """Read one JSON Lines log with `schema`; refuse missing, empty or malformed files."""
    if not path.is_file():
        raise ReportInputError(f"{path}: file not found (the serving layer writes it for every experiment)")
    data = _complete_lines(path)
    if allow_empty and not data.strip():
        return pl.DataFrame(schema=schema)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
    except Exception as err:  # polars raises ComputeError/SchemaError subclasses; locate the line ourselves
        raise ReportInputError(_describe_problems(path, fallback=f"cannot be parsed ({err})")) from None
    base = re.sub(r"\.\d{6,}\.", ".", path.name)  # a rotated part has its log's required fields
    required = _REQUIRED[base] if base in _REQUIRED else tuple(schema)
    if frame.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
        raise ReportInputError(_describe_problems(path, fallback="has rows with null required fields"))
    if frame.is_empty() and not allow_empty:
        raise ReportInputError(f"{path}: no records (empty log); nothing to analyse")
    return frame


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline.

    A server appends whole lines, but a report read while it serves can catch the last batch half
    written; that fragment is not a record yet (the next read has it whole), so it is left out and
    said so rather than reported as a malformed log."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: ignoring %d bytes after the last newline (a record still being written, or cut by a crash)",
                    path, len(data) - end)
    return data if end == len(data) else data[:end]  # slicing copies: only when there is a fragment to drop


def _describe_problems(path: Path, fallback: str) -> str:
    """Scan `path` line by line (only on the error path) and name the first bad lines."""
    required = _REQUIRED.get(re.sub(r"\.\d{6,}\.", ".", path.name), ())
    problems: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            problem = _line_problem(line, required)
            if problem:
                problems.append(f"{path}, line {lineno}: {problem}")
                if len(problems) >= _MAX_LISTED:
                    break
    if not problems:
        return f"{path}: {fallback}"
    more = " (first problems shown)" if len(problems) >= _MAX_LISTED else ""
    return "malformed log" + more + ":\n  " + "\n  ".join(problems)


def _line_problem(line: str, required: tuple[str, ...]) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return f"invalid JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [k for k in required if record.get(k) is None]
    if missing:
        return f"missing required field(s) {', '.join(missing)}"
    ts = record.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return f"'ts' must be unix seconds as a number, got {ts!r}"
    if "items" in required and not isinstance(record["items"], list):
        return f"'items' must be a list of item ids, got {type(record['items']).__name__}"
    for key in required:
        if key not in ("ts", "items") and isinstance(record[key], (dict, list)):
            return f"'{key}' must be a string, got {type(record[key]).__name__}"
    return None


def read_spec(path: Path) -> ExperimentSpec | None:
    """Parse experiment.json if present: {"name", "variants": {name: weight}, "start_ts", "target_lift"?,
    "guardrails"?, "mode"?, "catalogue_size"?}."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}, line {err.lineno}: invalid JSON ({err.msg})") from None
    variants = raw.get("variants") if isinstance(raw, dict) else None
    if not isinstance(variants, dict) or len(variants) < 2:
        raise ReportInputError(f"{path}: 'variants' must map at least two variant names to weights, got {variants!r}")
    bad = {k: v for k, v in variants.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
    if bad:
        raise ReportInputError(f"{path}: variant weights must be positive numbers, got {bad}")
    start, target = raw.get("start_ts"), raw.get("target_lift")
    for key, value in (("start_ts", start), ("target_lift", target)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ReportInputError(f"{path}: '{key}' must be a number, got {value!r}")
    mode, size = raw.get("mode", "ab"), raw.get("catalogue_size")
    if mode not in ("ab", "interleave"):
        raise ReportInputError(f"{path}: 'mode' must be \"ab\" or \"interleave\", got {mode!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ReportInputError(f"{path}: 'catalogue_size' must be a positive integer, got {size!r}")
    return ExperimentSpec(str(raw.get("name") or path.parent.name), {str(k): float(v) for k, v in variants.items()},
                          None if start is None else float(start), None if target is None else float(target),
                          parse_guardrails(raw.get("guardrails"), path), mode, size)
