"""Reading an online experiment's log directory: `exposures.jsonl`, `events.jsonl` and the
optional `experiment.json`.

The serving layer writes these files; this module is the contract's reader. Loading goes through
polars with a fixed schema (fast on millions of lines). Only when polars rejects a file, or a
required field is missing, do we re-read it line by line, so the error can name the file and line
to fix instead of echoing a parser message.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from training.ab.errors import ReportInputError

EXPOSURES_FILE, EVENTS_FILE, SPEC_FILE = "exposures.jsonl", "events.jsonl", "experiment.json"

EXPOSURE_SCHEMA: dict[str, pl.DataType] = {
    "exposure_id": pl.String(), "ts": pl.Float64(), "user_id": pl.String(), "variant": pl.String(),
    "model_version": pl.String(), "items": pl.List(pl.String()),
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


@dataclass(frozen=True)
class ExperimentLogs:
    """The validated contents of one log directory."""

    log_dir: Path
    exposures: pl.DataFrame
    events: pl.DataFrame
    spec: ExperimentSpec | None


def read_experiment(log_dir: Path) -> ExperimentLogs:
    """Load and validate a log directory; raises ReportInputError naming the file (and line)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise ReportInputError(f"experiment log directory not found: {log_dir}")
    exposures = read_jsonl(log_dir / EXPOSURES_FILE, EXPOSURE_SCHEMA)
    events = read_jsonl(log_dir / EVENTS_FILE, EVENT_SCHEMA)
    return ExperimentLogs(log_dir, exposures, events, read_spec(log_dir / SPEC_FILE))


def read_jsonl(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read one JSON Lines log with `schema`; refuse missing, empty or malformed files."""
    if not path.is_file():
        raise ReportInputError(f"{path}: file not found (the serving layer writes it for every experiment)")
    try:
        frame = pl.read_ndjson(path, schema=schema)
    except Exception as err:  # polars raises ComputeError/SchemaError subclasses; locate the line ourselves
        raise ReportInputError(_describe_problems(path, fallback=f"cannot be parsed ({err})")) from None
    required = _REQUIRED[path.name] if path.name in _REQUIRED else tuple(schema)
    if frame.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
        raise ReportInputError(_describe_problems(path, fallback="has rows with null required fields"))
    if frame.is_empty():
        raise ReportInputError(f"{path}: no records (empty log); nothing to analyse")
    return frame


def _describe_problems(path: Path, fallback: str) -> str:
    """Scan `path` line by line (only on the error path) and name the first bad lines."""
    required = _REQUIRED.get(path.name, ())
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
    """Parse experiment.json if present: {"name", "variants": {name: weight}, "start_ts", "target_lift"?}."""
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
    return ExperimentSpec(str(raw.get("name") or path.parent.name), {str(k): float(v) for k, v in variants.items()},
                          None if start is None else float(start), None if target is None else float(target))
