"""The decision line every report leads with: ship, don't ship, or keep running, and why.

Experimentation platforms lead with a recommendation because a table of twenty p-values invites
cherry-picking. The rules, in order (a reason is recorded for every rule that fires):

1. Broken data decides first: a sample-ratio mismatch means the assignment or the logging is
   wrong, so nothing in the report can be trusted -> dont_ship.
2. Guardrails: a treatment that fails a declared guardrail is not shipped, however good its goal
   metric; a declared guardrail the logs cannot measure blocks "ship".
3. The evidence on the goal: the always-valid sequential decision of the primary metric (so the
   decision can be read at any daily look), the interleaving preference, or the off-policy
   estimate. Significant and positive -> ship; significant and negative, or futile (the target
   effect is ruled out) -> dont_ship; otherwise keep_running. Any other metric significantly
   worse (always-valid) also blocks shipping.

With several treatments: ship when one of them may ship (the reasons name it), dont_ship when
none can, else keep_running.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from training.ab.results import Report
from training.ab.sequential import FUTILE, SIGNIFICANT

Decision = Literal["ship", "dont_ship", "keep_running"]
SHIP, DONT_SHIP, KEEP_RUNNING = "ship", "dont_ship", "keep_running"


def _guardrail_block(report: Report, treatment: str) -> tuple[str | None, list[str]]:
    failed = [g for g in report.guardrails if g["variant"] == treatment and g["status"] == "fail"]
    unmeasured = [g for g in report.guardrails if g["variant"] == treatment and g["status"] == "not measured"]
    reasons = [f"guardrail {g['name']} failed for {treatment}: {g['value']:.4g} ({_broken_bound(g)})" for g in failed]
    reasons += [f"guardrail {g['name']} is declared but the logs do not measure it for {treatment}" for g in unmeasured]
    return (DONT_SHIP if failed else KEEP_RUNNING if unmeasured else None), reasons


def _broken_bound(g: dict) -> str:
    if g["max"] is not None and g["value"] > g["max"]:
        return f"> max {g['max']:g}"
    return f"< min {g['min']:g}"


def _online_treatment(report: Report, treatment: str, primary: str) -> tuple[Decision, list[str]]:
    block, reasons = _guardrail_block(report, treatment)
    rows = [c for c in report.comparisons if c.treatment == treatment and c.sequential]
    worse = [c for c in rows if c.sequential["decision"] == SIGNIFICANT and c.sequential["cs_high"] < 0]
    reasons += [f"{c.metric} is significantly worse for {treatment} (always-valid p = {c.sequential['always_valid_p']:.3g})"
                for c in worse]
    goal = next((c for c in rows if c.metric == primary), None)
    if goal is None:
        return (block or KEEP_RUNNING), reasons + [f"no sequential result for {primary} ({treatment})"]
    seq = goal.sequential
    p = seq["always_valid_p"]
    lift = f"[{seq['rel_cs_low']:+.1%}, {seq['rel_cs_high']:+.1%}]" if np.isfinite(seq["rel_cs_low"]) else "unbounded"
    if seq["decision"] == SIGNIFICANT and seq["cs_low"] > 0:
        verdict, why = SHIP, f"{primary} is significantly better for {treatment}: always-valid p = {p:.3g}, lift CS {lift}"
    elif seq["decision"] == SIGNIFICANT:
        verdict, why = DONT_SHIP, f"{primary} is significantly worse for {treatment}: always-valid p = {p:.3g}, lift CS {lift}"
    elif seq["decision"] == FUTILE:
        verdict, why = DONT_SHIP, (f"{primary}: the target lift is ruled out for {treatment} (futile): lift CS {lift}")
    else:
        verdict, why = KEEP_RUNNING, (f"{primary}: not yet conclusive for {treatment} after {seq['looks']} daily looks "
                                      f"(always-valid p = {p:.3g}, lift CS {lift}); keep going")
    reasons.insert(0, why)
    if worse:
        verdict = DONT_SHIP
    if block == DONT_SHIP or (block == KEEP_RUNNING and verdict == SHIP):
        verdict = block
    return verdict, reasons


def combine(per_treatment: dict[str, tuple[Decision, list[str]]]) -> tuple[Decision, list[str]]:
    """Several treatments: ship if one ships, dont_ship if none can, else keep_running."""
    decisions = [d for d, _ in per_treatment.values()]
    reasons = [r for _, rs in per_treatment.values() for r in rs]
    if SHIP in decisions:
        best = [t for t, (d, _) in per_treatment.items() if d == SHIP]
        return SHIP, [f"ship {', '.join(best)}"] + reasons if len(per_treatment) > 1 else reasons
    return (DONT_SHIP if decisions and all(d == DONT_SHIP for d in decisions) else KEEP_RUNNING), reasons


def decide_report(report: Report, primary: str) -> None:
    """Set `report.decision` and `report.reasons` from what the analysis found."""
    srm = report.srm and report.srm.get("mismatch")
    if report.interleaving is not None:
        decision, reasons = _interleaving(report)
    elif report.ope is not None:
        decision, reasons = _ope(report)
    elif report.kind == "offline":
        decision, reasons = _offline(report, primary)
    else:
        treatments = list(dict.fromkeys(c.treatment for c in report.comparisons))
        decision, reasons = combine({t: _online_treatment(report, t, primary) for t in treatments}) if treatments else \
            (KEEP_RUNNING, ["no treatment could be compared"])
    if srm:
        decision = DONT_SHIP
        reasons.insert(0, f"sample ratio mismatch (p = {report.srm['p_value']:.2g}): assignment or logging is broken, "
                          "nothing below can be trusted")
    report.decision, report.reasons = decision, reasons


def _interleaving(report: Report) -> tuple[Decision, list[str]]:
    il = report.interleaving
    treatment = il["treatment"]
    blocks = [_guardrail_block(report, v) for v in dict.fromkeys(g["variant"] for g in report.guardrails)]
    block = DONT_SHIP if any(b == DONT_SHIP for b, _ in blocks) else KEEP_RUNNING if any(b for b, _ in blocks) else None
    reasons = [r for _, rs in blocks for r in rs]
    line = (f"interleaving preference for {treatment} over {il['control']}: {il['preference']:+.3f} "
            f"[{il['ci_low']:+.3f}, {il['ci_high']:+.3f}], p = {il['p_value']:.3g} ({il['users']:,} users)")
    if il["p_value"] < report.alpha and il["preference"] > 0:
        verdict = SHIP
    elif il["p_value"] < report.alpha:
        verdict = DONT_SHIP
    else:
        verdict, line = KEEP_RUNNING, line + "; not significant yet"
    if block == DONT_SHIP or (block == KEEP_RUNNING and verdict == SHIP):
        verdict = block
    return verdict, [line] + reasons


def _ope(report: Report) -> tuple[Decision, list[str]]:
    ope = report.ope
    if not ope.get("possible"):
        return KEEP_RUNNING, [f"off-policy evaluation impossible: {ope.get('reason')}; run an online test instead"]
    dr, logged = ope["dr"], ope["logged"]
    line = (f"doubly-robust estimate of the candidate's {ope['metric']}: {dr['estimate']:.4g} "
            f"[{dr['ci_low']:.4g}, {dr['ci_high']:.4g}] vs logged policy {logged['estimate']:.4g} "
            f"[{logged['ci_low']:.4g}, {logged['ci_high']:.4g}]")
    reasons = [line] + [w.message for w in report.warnings if w.code == "OPE_SUPPORT"]
    if any(w.code == "OPE_SUPPORT" for w in report.warnings):
        return KEEP_RUNNING, reasons + ["missing support biases the estimate; confirm online"]
    if dr["ci_low"] > logged["ci_high"]:
        return SHIP, reasons + ["the candidate is estimated better than the logged policy: worth an online test"]
    if dr["ci_high"] < logged["ci_low"]:
        return DONT_SHIP, reasons + ["the candidate is estimated worse than the logged policy"]
    return KEEP_RUNNING, reasons + ["the estimates overlap: log more traffic or test online"]


def _offline(report: Report, primary: str) -> tuple[Decision, list[str]]:
    if any(w.code == "AA" for w in report.warnings):
        return DONT_SHIP, ["A/A comparison: the two runs are identical, there is nothing to ship"]
    worse = [c for c in report.comparisons if c.verdict(report.alpha) == "worse"]
    goal = next((c for c in report.comparisons if c.metric == primary), report.comparisons[0] if report.comparisons else None)
    if worse:
        return DONT_SHIP, [f"{c.metric} is significantly worse for B (p = {c.p_value:.3g})" for c in worse]
    if goal is not None and goal.verdict(report.alpha) == "better":
        return SHIP, [f"{goal.metric} is significantly better for B (p = {goal.p_value:.3g}) and no headline metric is worse"]
    return KEEP_RUNNING, [f"{goal.metric if goal else 'no metric'}: no significant difference; "
                          "evaluate on more users or test online"]
