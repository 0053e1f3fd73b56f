"""The A/B report as data: what `report.json` contains and what the HTML/Markdown render.

Offline and online analyses both produce a `Report`, so rendering, the JSON contract and any
downstream consumer (a dashboard, a PR bot) deal with one shape. Numbers are plain floats; NaN
(undefined, e.g. a lift over a zero baseline) becomes `null` in JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Interval:
    """A value with its confidence interval."""

    value: float
    low: float
    high: float


@dataclass
class VariantSummary:
    """One variant (online) or run (offline): size, metric values with CIs, and raw counts."""

    name: str
    role: Literal["control", "treatment"]
    users: int
    metrics: dict[str, Interval]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CupedResult:
    """The CUPED-adjusted version of a comparison, and how much variance the adjustment removed."""

    covariate: str
    theta: float
    diff: float
    ci_low: float
    ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    p_value: float
    variance_reduction: float


@dataclass
class Comparison:
    """Treatment vs control on one metric within one segment ("all" for the headline numbers)."""

    metric: str
    control: str
    treatment: str
    n_control: int
    n_treatment: int
    control_value: float
    treatment_value: float
    diff: float
    ci_low: float
    ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    p_value: float
    method: str
    segment: str = "all"
    p_adjusted: float | None = None  # Holm over the headline rows (family-wise); None for segment rows
    mde: float | None = None
    mde_rel: float | None = None
    cuped: CupedResult | None = None
    # Always-valid monitoring over daily looks (online): always_valid_p, decision, cs_low/high, history.
    sequential: dict[str, Any] | None = None

    @property
    def primary_p(self) -> float:
        """p-value the verdict uses: CUPED when applied, so verdict and the CI shown always agree.

        `p_adjusted` (Holm) is reported beside it for readers who need family-wise control.
        """
        return self.cuped.p_value if self.cuped else self.p_value

    def verdict(self, alpha: float) -> str:
        """'better' / 'worse' / 'inconclusive' for the treatment (all our metrics are higher-is-better)."""
        if not self.primary_p < alpha:
            return "inconclusive"
        diff = self.cuped.diff if self.cuped else self.diff
        return "better" if diff > 0 else "worse"


@dataclass
class Finding:
    """A warning shown above the numbers. `code` is stable (SRM, UNDERPOWERED, ...) for tooling."""

    code: str
    severity: Severity
    message: str


@dataclass
class TimelinePoint:
    """Cumulative relative lift of the primary metric up to time `ts` (unix seconds)."""

    ts: float
    treatment: str
    rel_lift: float
    ci_low: float
    ci_high: float
    users: int


@dataclass
class Report:
    """Everything one A/B report says; `to_json` is the report.json contract."""

    kind: Literal["offline", "online", "ope"]
    title: str
    inputs: dict[str, Any]
    alpha: float
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    segments: list[Comparison] = field(default_factory=list)
    timeline: list[TimelinePoint] = field(default_factory=list)
    srm: dict[str, Any] | None = None
    warnings: list[Finding] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The first line of every output: "ship" | "dont_ship" | "keep_running", and why (see `decision`).
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    interleaving: dict[str, Any] | None = None  # team-draft logs: preference, ci_low, ci_high, p_value, ...
    ope: dict[str, Any] | None = None  # off-policy estimates: ips, snips, dr (estimate, ci_low, ci_high), ...

    @property
    def control(self) -> VariantSummary:
        return next(v for v in self.variants if v.role == "control")

    def warn(self, code: str, severity: Severity, message: str) -> None:
        """Add a finding; errors stay first (stable sort), so the worst news leads every output."""
        self.warnings.append(Finding(code, severity, message))
        self.warnings.sort(key=lambda f: _SEVERITY_RANK[f.severity])

    def to_dict(self) -> dict[str, Any]:
        """report.json: `decision` and `reasons` first, then everything else."""
        out = _finite(asdict(self))
        for src, dst in zip(self.comparisons + self.segments, out["comparisons"] + out["segments"]):
            dst["verdict"] = src.verdict(self.alpha)
        return {"decision": out.pop("decision"), "reasons": out.pop("reasons"), **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _finite(obj: Any) -> Any:
    """NaN/inf -> None recursively, so the JSON is strict (browsers and jq reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
