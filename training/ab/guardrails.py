"""Guardrails: metrics a treatment must not break, whatever it does to the goal metric.

Declared per experiment in experiment.json, each with a bound on the treatment's value:

    "guardrails": {"latency_p99_ms": {"max": 250}, "error_rate": {"max": 0.01},
                   "coverage": {"min": 0.2}, "new_item_share": {"min": 0.02}}

Measured from the exposure log (optional fields the serving layer writes):

* latency_p99_ms: 99th percentile of `latency_ms` over the variant's requests;
* error_rate: share of the variant's requests logged with `status` >= 500 (failed feeds are
  logged with no items and left out of every other metric);
* coverage: distinct items the variant showed / catalogue size (experiment.json
  `catalogue_size`, else the distinct items all variants showed): a model that collapses onto
  the head of the catalogue fails it;
* new_item_share: sum of `new_items` (shown items added to the catalogue after the run was
  trained) / shown items: the cold-start path must keep surfacing new items.

A declared guardrail the logs cannot measure is reported as "not measured", and the decision
cannot be "ship" until it is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from training.ab.errors import ReportInputError

GUARDRAILS = ("latency_p99_ms", "error_rate", "coverage", "new_item_share")
Status = Literal["pass", "fail", "not measured"]


@dataclass(frozen=True)
class Guardrail:
    """A declared bound: the treatment's value must be <= max and/or >= min."""

    name: str
    max: float | None = None
    min: float | None = None


@dataclass
class GuardrailResult:
    """One guardrail for one variant (control rows are shown for reference, only treatments decide)."""

    name: str
    variant: str
    value: float | None
    max: float | None
    min: float | None
    status: Status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_guardrails(raw: Any, path: Path) -> dict[str, Guardrail]:
    """experiment.json's "guardrails" object -> {name: Guardrail}; names the file and key on bad input."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ReportInputError(f"{path}: 'guardrails' must be an object like {{\"error_rate\": {{\"max\": 0.01}}}}")
    out = {}
    for name, bound in raw.items():
        if name not in GUARDRAILS:
            raise ReportInputError(f"{path}: unknown guardrail {name!r}; known: {', '.join(GUARDRAILS)}")
        if not isinstance(bound, dict) or not bound or set(bound) - {"max", "min"}:
            raise ReportInputError(f"{path}: guardrail {name!r} must be {{\"max\": x}} and/or {{\"min\": x}}, got {bound!r}")
        for key, value in bound.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ReportInputError(f"{path}: guardrail {name!r} {key} must be a number, got {value!r}")
        out[name] = Guardrail(name, bound.get("max"), bound.get("min"))
    return out


def measure(exposures: pl.DataFrame, variants: list[str], catalogue_size: int | None) -> dict[str, dict[str, float | None]]:
    """Guardrail values per variant from all exposure records (failed requests included)."""
    ok = exposures.filter(pl.col("status").is_null() | (pl.col("status") < 400))
    catalogue = catalogue_size or ok.select(pl.col("items").explode().n_unique()).item()
    out: dict[str, dict[str, float | None]] = {}
    for variant in variants:
        rows = exposures.filter(pl.col("variant") == variant)
        served = ok.filter(pl.col("variant") == variant)
        latency = rows["latency_ms"].drop_nulls()
        status = rows["status"]
        shown = served.select(pl.col("items").list.len().sum()).item() or 0
        new = served["new_items"]
        out[variant] = {
            "latency_p99_ms": float(latency.quantile(0.99, "higher")) if latency.len() else None,
            "error_rate": float((status.drop_nulls() >= 500).sum() / rows.height)
            if rows.height and status.null_count() < rows.height else None,
            "coverage": served.select(pl.col("items").explode().n_unique()).item() / catalogue if catalogue else None,
            "new_item_share": float(new.drop_nulls().sum() / shown) if shown and new.null_count() < served.height else None,
        }
    return out


def check(declared: dict[str, Guardrail], values: dict[str, dict[str, float | None]]) -> list[GuardrailResult]:
    """Compare each declared bound with each variant's measured value."""
    results = []
    for variant, measured in values.items():
        for name, bound in declared.items():
            value = measured.get(name)
            if value is None:
                status: Status = "not measured"
            elif (bound.max is not None and value > bound.max) or (bound.min is not None and value < bound.min):
                status = "fail"
            else:
                status = "pass"
            results.append(GuardrailResult(name, variant, value, bound.max, bound.min, status))
    return results
