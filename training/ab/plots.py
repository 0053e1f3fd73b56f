"""Figures of an A/B report as inline SVG strings (matplotlib `Figure`, no pyplot, no global state).

Inline SVG keeps the HTML self-contained (no CDN, no side files), stays sharp when zoomed and
keeps its text searchable. Figures are drawn from the `Report` alone, so the pictures show
exactly the numbers in report.json.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from training.ab.results import Comparison, Report

_RC = {"svg.fonttype": "none", "svg.hashsalt": "ab-report", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}
_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


@dataclass(frozen=True)
class Plot:
    """One rendered figure: a caption for the page and the inline `<svg>` element."""

    key: str
    caption: str
    svg: str


def figures(report: Report) -> list[Plot]:
    """All figures for `report`, in page order."""
    with matplotlib.rc_context(_RC):
        plots = []
        if report.comparisons:
            plots += [Plot("metrics", "Metric per variant with 95% CI", _svg(_metric_bars(report))),
                      Plot("lift", "Relative lift of each metric vs control (95% CI; CUPED where applied)",
                           _svg(_lift_forest(report)))]
        if any(c.sequential and len(c.sequential["history"]) > 1 for c in report.comparisons):
            plots.append(Plot("sequential", "Always-valid 95% confidence sequence of the difference, look by look "
                              "(safe to read every day)", _svg(_confidence_sequences(report))))
        if report.interleaving:
            plots.append(Plot("interleaving", "Interleaving: users preferring each variant, and the preference with its 95% CI",
                              _svg(_interleaving(report))))
        if report.ope and report.ope.get("possible"):
            plots.append(Plot("ope", "Off-policy estimates of the candidate's click rate vs the logged policy (95% CI)",
                              _svg(_ope(report))))
        if report.timeline:
            plots.append(Plot("timeline", "Cumulative CTR lift over time (95% CI band)", _svg(_cumulative_lift(report))))
        if report.segments:
            plots.append(Plot("segments", "Per-segment difference B - A (95% paired bootstrap CI)",
                              _svg(_segment_deltas(report))))
    return plots


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    # No date (reproducible output) and no RDF metadata block (nothing that even looks like a link).
    fig.savefig(buf, format="svg",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG is embedded in HTML


def _grid(n: int, width: float = 9.0, row_height: float = 2.6) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width, row_height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _metric_bars(report: Report) -> Figure:
    metrics = list(report.variants[0].metrics)
    fig, axes = _grid(max(len(metrics), 1))
    for ax, metric in zip(axes, metrics):
        names = [v.name for v in report.variants if metric in v.metrics]
        vals = [v.metrics[metric] for v in report.variants if metric in v.metrics]
        err = [[max(i.value - i.low, 0) for i in vals], [max(i.high - i.value, 0) for i in vals]]
        ax.bar(names, [i.value for i in vals], yerr=err, capsize=4, color=_COLORS[: len(vals)], alpha=0.85)
        ax.set_title(metric)
        low = min(i.low for i in vals)
        high = max(i.high for i in vals)
        pad = (high - low) * 0.6 or abs(high) * 0.1 or 1e-3
        ax.set_ylim(max(0.0, low - pad), high + pad)  # zoomed: the CIs, not the zero baseline, are the point
    return fig


def _primary(c: Comparison) -> tuple[float, float, float]:
    if c.cuped:
        return c.cuped.rel_lift, c.cuped.rel_ci_low, c.cuped.rel_ci_high
    return c.rel_lift, c.rel_ci_low, c.rel_ci_high


def _lift_forest(report: Report) -> Figure:
    rows = report.comparisons
    fig = Figure(figsize=(9.0, 0.45 * len(rows) + 1.2), layout="constrained")
    ax = fig.subplots()
    labels = [f"{c.metric} ({c.treatment} vs {c.control})" if len(report.variants) > 2 else c.metric for c in rows]
    for y, c in enumerate(rows):
        lift, lo, hi = (100 * v for v in _primary(c))
        verdict = c.verdict(report.alpha)
        color = {"better": "#2e7d32", "worse": "#c62828"}.get(verdict, "#555555")
        if all(math.isfinite(v) for v in (lift, lo, hi)):
            ax.errorbar(lift, y, xerr=[[lift - lo], [hi - lift]], fmt="o", color=color, capsize=4)
            ax.annotate(f"{lift:+.2f}%", (lift, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_ylim(len(rows) - 0.4, -0.8)
    ax.set_xlabel("relative lift of treatment vs control (%)")
    return fig


def _cumulative_lift(report: Report) -> Figure:
    fig = Figure(figsize=(9.0, 3.2), layout="constrained")
    ax = fig.subplots()
    for k, treatment in enumerate(sorted({p.treatment for p in report.timeline})):
        pts = [p for p in report.timeline if p.treatment == treatment]
        t = [datetime.fromtimestamp(p.ts, tz=timezone.utc) for p in pts]
        color = _COLORS[(k + 1) % len(_COLORS)]
        ax.plot(t, [100 * p.rel_lift for p in pts], color=color, marker="o", ms=3, label=f"{treatment} vs {report.control.name}")
        ax.fill_between(t, [100 * p.ci_low for p in pts], [100 * p.ci_high for p in pts], color=color, alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("cumulative CTR lift (%)")
    ax.set_xlabel("time (UTC)")
    ax.legend(loc="upper right", frameon=False)
    return fig


def _segment_deltas(report: Report) -> Figure:
    metrics = list(dict.fromkeys(c.metric for c in report.segments))
    fig, axes = _grid(len(metrics), row_height=0.35 * len({c.segment for c in report.segments}) + 1.4)
    cols = min(len(metrics), 3)
    for i, (ax, metric) in enumerate(zip(axes, metrics)):
        rows = [c for c in report.segments if c.metric == metric]
        for y, c in enumerate(rows):
            color = "#2e7d32" if c.ci_low > 0 else "#c62828" if c.ci_high < 0 else "#555555"
            ax.errorbar(c.diff, y, xerr=[[c.diff - c.ci_low], [c.ci_high - c.diff]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{c.segment} n={c.n_control}" for c in rows] if i % cols == 0 else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_title(metric)
    return fig


def _confidence_sequences(report: Report) -> Figure:
    rows = [c for c in report.comparisons if c.sequential and len(c.sequential["history"]) > 1]
    fig, axes = _grid(len(rows), row_height=2.6)
    for ax, c in zip(axes, rows):
        hist = c.sequential["history"]
        t = [datetime.fromtimestamp(h["ts"], tz=timezone.utc) for h in hist]
        finite = [h for h in hist if h["cs_low"] is not None and math.isfinite(h["cs_low"]) and math.isfinite(h["cs_high"])]
        if finite:
            tf = [datetime.fromtimestamp(h["ts"], tz=timezone.utc) for h in finite]
            ax.fill_between(tf, [h["cs_low"] for h in finite], [h["cs_high"] for h in finite], color=_COLORS[0], alpha=0.3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{c.metric} ({c.treatment}): {c.sequential['decision']}")
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_xlim(t[0], t[-1])
    return fig


def _interleaving(report: Report) -> Figure:
    il = report.interleaving
    fig = Figure(figsize=(9.0, 2.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.barh([f"prefer {il['treatment']}", "tie", f"prefer {il['control']}"], [il["wins"], il["ties"], il["losses"]],
              color=[_COLORS[1], "#999999", _COLORS[0]])
    left.set_xlabel("users")
    right.errorbar(il["preference"], 0, xerr=[[il["preference"] - il["ci_low"]], [il["ci_high"] - il["preference"]]],
                   fmt="o", color="#2e7d32" if il["ci_low"] > 0 else "#c62828" if il["ci_high"] < 0 else "#555555", capsize=4)
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks([])
    right.set_xlabel(f"preference for {il['treatment']} (wins - losses) / users")
    return fig


def _ope(report: Report) -> Figure:
    keys = [("ips", "IPS"), ("snips", "SNIPS"), ("dr", "DR"), ("logged", "logged policy")]
    fig = Figure(figsize=(9.0, 2.2), layout="constrained")
    ax = fig.subplots()
    for y, (key, label) in enumerate(keys):
        e = report.ope[key]
        ax.errorbar(e["estimate"], y, xerr=[[e["estimate"] - e["ci_low"]], [e["ci_high"] - e["estimate"]]], fmt="o",
                    color=_COLORS[3] if key == "logged" else _COLORS[0], capsize=4)
    ax.set_yticks(range(len(keys)), [label for _, label in keys])
    ax.invert_yaxis()
    ax.set_xlabel("click rate per shown item")
    return fig
