"""Writing a `Report` out: one self-contained HTML page, report.json beside it and a short
Markdown summary for the pull request.

All three come from the same `Report`, so the page a reviewer reads, the JSON a tool reads and
the PR comment cannot disagree.
"""
from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from training.ab.plots import figures
from training.ab.results import Comparison, Report

TEMPLATE = "report_template.html"


def fmt_num(value: float | None, digits: int = 4) -> str:
    """Metric values and differences: 4 significant digits, '—' when undefined."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if value != 0 else "0"


def fmt_pct(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * value:+.2f}%" if signed else f"{100 * value:.2f}%"


def fmt_p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def headline(c: Comparison) -> dict[str, float]:
    """The numbers a reader should quote: CUPED-adjusted when applied, raw otherwise."""
    src = c.cuped or c
    return {"diff": src.diff, "ci_low": src.ci_low, "ci_high": src.ci_high, "rel_lift": src.rel_lift,
            "rel_ci_low": src.rel_ci_low, "rel_ci_high": src.rel_ci_high, "p_value": src.p_value}


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num, pct=fmt_pct, pval=fmt_p)
    env.globals.update(headline=headline)
    return env


def render_html(report: Report) -> str:
    return _environment().get_template(TEMPLATE).render(
        report=report, figures=figures(report), decision_label=DECISION_LABELS.get(report.decision or "", "none"))


def render_markdown(report: Report, html_name: str) -> str:
    """A PR-sized summary: warnings first, then one line per headline metric."""
    lines = [f"**{decision_line(report)}**", "", f"### {report.title}", ""]
    if report.srm and report.srm["mismatch"]:
        lines += ["**Sample ratio mismatch: the verdicts below are not trustworthy until it is explained.**", ""]
    for w in report.warnings:
        icon = "🛑" if w.severity == "error" else "⚠️"
        lines.append(f"> {icon} **{w.code}**: {w.message}")
        lines.append(">")
    if report.warnings:
        lines[-1] = ""
    sizes = ", ".join(f"{v.name}: {v.users:,} users" for v in report.variants)
    lines += [f"{sizes}; alpha {report.alpha}." if sizes else f"alpha {report.alpha}.", ""]
    if report.comparisons:
        lines += ["| metric | control | treatment | Δ (95% CI) | lift (95% CI) | p | p (Holm) | verdict | always-valid p | monitor |",
                  "|---|---:|---:|---|---|---:|---:|---|---:|---|"]
    for c in report.comparisons:
        h = headline(c)
        tag = " (CUPED)" if c.cuped else ""
        name = c.metric if len(report.variants) == 2 else f"{c.metric} {c.treatment}"
        lines.append(f"| {name}{tag} | {fmt_num(c.control_value)} | {fmt_num(c.treatment_value)} | "
                     f"{fmt_num(h['diff'])} [{fmt_num(h['ci_low'])}, {fmt_num(h['ci_high'])}] | "
                     f"{fmt_pct(h['rel_lift'])} [{fmt_pct(h['rel_ci_low'])}, {fmt_pct(h['rel_ci_high'])}] | "
                     f"{fmt_p(h['p_value'])} | {fmt_p(c.p_adjusted)} | {c.verdict(report.alpha)} | "
                     f"{fmt_p(c.sequential['always_valid_p']) if c.sequential else '—'} | "
                     f"{c.sequential['decision'] if c.sequential else '—'} |")
    if report.interleaving:
        il = report.interleaving
        lines += ["", f"Interleaving ({il['users']:,} users): preference for {il['treatment']} "
                  f"{fmt_num(il['preference'], 3)} [{fmt_num(il['ci_low'], 3)}, {fmt_num(il['ci_high'], 3)}], "
                  f"p = {fmt_p(il['p_value'])}; wins {il['wins']:,} / losses {il['losses']:,} / ties {il['ties']:,}."]
    if report.ope and report.ope.get("possible"):
        lines += ["", "| estimator | click rate | 95% CI |", "|---|---:|---|"]
        for key in ("ips", "snips", "dr", "logged"):
            e = report.ope[key]
            lines.append(f"| {key} | {fmt_num(e['estimate'])} | [{fmt_num(e['ci_low'])}, {fmt_num(e['ci_high'])}] |")
        lines += ["", f"Effective sample size {report.ope['effective_sample_size']:,.0f}; support "
                  f"{fmt_pct(report.ope['support']['estimate'], signed=False)}."]
    failing = [g for g in report.guardrails if g["status"] != "pass"]
    if report.guardrails:
        lines += ["", "Guardrails: " + ("all pass." if not failing else "; ".join(
            f"{g['name']} ({g['variant']}) {g['status']}" for g in failing) + ".")]
    lines += ["", f"Full report with plots: `{html_name}` (numbers in `{Path(html_name).with_suffix('.json').name}`)."]
    return "\n".join(lines) + "\n"


DECISION_LABELS = {"ship": "SHIP", "dont_ship": "DON'T SHIP", "keep_running": "KEEP RUNNING"}


def decision_line(report: Report) -> str:
    """The first line of every output: the decision and its reasons."""
    label = DECISION_LABELS.get(report.decision or "", "NO DECISION")
    return f"DECISION: {label}" + (f" — {'; '.join(report.reasons)}" if report.reasons else "")


def console_lines(report: Report) -> list[str]:
    """What `recsys ab-report` prints: the decision, then one line per headline comparison (undefined
    numbers as '—', never nan), the sequential monitor, interleaving and off-policy estimates."""
    lines = [decision_line(report)]
    for c in report.comparisons:
        h = headline(c)
        seq = f" | always-valid p={fmt_p(c.sequential['always_valid_p'])}: {c.sequential['decision']}" if c.sequential else ""
        lines.append(f"{c.metric:<16} {c.treatment} vs {c.control}: {fmt_pct(h['rel_lift'])} "
                     f"[{fmt_pct(h['rel_ci_low'])}, {fmt_pct(h['rel_ci_high'])}] p={fmt_p(h['p_value'])} "
                     f"-> {c.verdict(report.alpha)}{seq}")
    if report.interleaving:
        il = report.interleaving
        lines.append(f"interleaving     {il['treatment']} vs {il['control']}: preference {fmt_num(il['preference'], 3)} "
                     f"[{fmt_num(il['ci_low'], 3)}, {fmt_num(il['ci_high'], 3)}] p={fmt_p(il['p_value'])} "
                     f"(wins {il['wins']:,}, losses {il['losses']:,}, ties {il['ties']:,})")
    if report.ope and report.ope.get("possible"):
        for key in ("ips", "snips", "dr", "logged"):
            e = report.ope[key]
            lines.append(f"{key:<16} {fmt_num(e['estimate'])} [{fmt_num(e['ci_low'])}, {fmt_num(e['ci_high'])}]")
        lines.append(f"effective sample size {report.ope['effective_sample_size']:,.0f}; support "
                     f"{fmt_pct(report.ope['support']['estimate'], signed=False)}")
    for g in report.guardrails:
        if g["status"] != "pass":
            lines.append(f"guardrail {g['name']} ({g['variant']}): {g['status']} (value {fmt_num(g['value'])})")
    return lines


def write_report(report: Report, out_html: Path) -> dict[str, Path]:
    """Write `out_html` plus `<stem>.json` and `<stem>.md` beside it; returns the three paths."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_html, "json": out_html.with_suffix(".json"), "md": out_html.with_suffix(".md")}
    paths["html"].write_text(render_html(report), encoding="utf-8")
    paths["json"].write_text(report.to_json() + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(report, out_html.name), encoding="utf-8")
    return paths
