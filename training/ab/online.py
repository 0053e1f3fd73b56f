"""Online A/B analysis from serving logs: who saw which variant, what they did, and whether the
difference is real.

Definitions (also printed in the report's Methods section):

* Unit of randomisation and analysis: the user. A user whose exposures carry more than one
  variant is excluded (assignment leaked) and counted in a warning.
* CTR = attributed clicks / exposures. A click is attributed when its item was in an exposure of
  the same user at or before the click, within `attribution_window_s` (default 24 h). It is a
  ratio of per-user sums, so its CI uses the delta method.
* Conversion rate = share of exposed users with at least one conversion at or after their first
  exposure (any item: the business outcome, independent of attribution).
* Pre-period = a user's events before min(first exposure, experiment start_ts). Pre-period
  clicks (conversions) are the CUPED covariate of CTR (conversion rate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats
from statsmodels.stats.multitest import multipletests

from training.ab.decision import decide_report
from training.ab.errors import ReportInputError
from training.ab.guardrails import check, measure
from training.ab.logs import ExperimentLogs, read_experiment
from training.ab.results import Comparison, CupedResult, Interval, Report, TimelinePoint, VariantSummary
from training.ab.sequential import decide, msprt

from training.ab.stats import ALPHA, RatioComparison, compare_ratio
from training.ab.validity import DEFAULT_TARGET_LIFT, SRM_ALPHA, PowerCheck, sample_ratio_check, two_sample_power

# metric -> (per-user numerator, denominator, pre-period covariate)
METRICS: dict[str, tuple[str, str, str]] = {
    "ctr": ("clicks", "exposures", "pre_clicks"),
    "conversion_rate": ("converted", "one", "pre_conversions"),
}
PRIMARY_METRIC = "ctr"
DAY = 86_400.0


@dataclass(frozen=True)
class OnlineConfig:
    """Analysis choices that are not in the logs."""

    alpha: float = ALPHA
    attribution_window_s: float = 86_400.0
    timeline_points: int = 20
    target_lift: float | None = None  # None: experiment.json's target_lift, else DEFAULT_TARGET_LIFT


def variant_order(logs: ExperimentLogs) -> list[str]:
    """Declared order (first = control) or, without experiment.json, 'control'/'A' first then sorted."""
    if logs.spec:
        return list(logs.spec.variants)
    names = sorted(logs.exposures["variant"].unique().to_list())
    return sorted(names, key=lambda v: (v.lower() not in ("control", "a"), names.index(v)))


def attributed_clicks(exposures: pl.DataFrame, events: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """Clicks on an item the same user was shown at or before the click, within the window."""
    clicks = events.filter(pl.col("event_type") == "click").select("user_id", "item_id", "ts").sort("ts")
    # Only (user, item) pairs that were ever clicked can attribute anything: the semi-join keeps the
    # exploded slates small (a few % of exposures x slate size).
    shown = (exposures.select("user_id", "ts", pl.col("items").alias("item_id")).explode("item_id")
             .join(clicks.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi")
             .with_columns(shown_ts=pl.col("ts")).sort("ts"))
    joined = clicks.join_asof(shown, on="ts", by=["user_id", "item_id"], strategy="backward",
                              tolerance=window_s, check_sortedness=False)
    return joined.filter(pl.col("shown_ts").is_not_null()).select("user_id", "ts")


def user_table(logs: ExperimentLogs, clicks: pl.DataFrame) -> pl.DataFrame:
    """One row per exposed user: variant, exposures, attributed clicks, conversion, pre-period counts."""
    cutoff = logs.spec.start_ts if logs.spec and logs.spec.start_ts is not None else float("inf")
    users = logs.exposures.group_by("user_id").agg(
        variant=pl.col("variant").first(), n_variants=pl.col("variant").n_unique(),
        exposures=pl.len(), first_ts=pl.col("ts").min())
    ev = logs.events.join(users.select("user_id", "first_ts"), on="user_id", how="inner")
    is_pre = pl.col("ts") < pl.min_horizontal(pl.col("first_ts"), pl.lit(cutoff))
    per_user_events = ev.group_by("user_id").agg(
        converted=((pl.col("event_type") == "conversion") & (pl.col("ts") >= pl.col("first_ts"))).any(),
        pre_clicks=((pl.col("event_type") == "click") & is_pre).sum(),
        pre_conversions=((pl.col("event_type") == "conversion") & is_pre).sum())
    return (users.join(clicks.group_by("user_id").agg(clicks=pl.len()), on="user_id", how="left")
            .join(per_user_events, on="user_id", how="left")
            .with_columns(pl.col("clicks", "pre_clicks", "pre_conversions").fill_null(0),
                          pl.col("converted").fill_null(False).cast(pl.Int64), one=pl.lit(1)))


def _arm(users: pl.DataFrame, variant: str, cols: tuple[str, ...]) -> list[np.ndarray]:
    arm = users.filter(pl.col("variant") == variant)
    return [arm[c].to_numpy().astype(float) for c in cols]


def _comparison(metric: str, control: str, treatment: str, res: RatioComparison, n_c: int, n_t: int,
                alpha: float, target_lift: float) -> tuple[Comparison, PowerCheck]:
    raw = res.raw
    power = two_sample_power(float(res.sd_control), float(res.sd_treatment), n_c, n_t, float(raw.control), alpha, target_lift)
    cuped = None
    if res.cuped is not None:
        c = res.cuped
        cuped = CupedResult(METRICS[metric][2], float(res.theta), float(c.diff), float(c.ci_low), float(c.ci_high),
                            float(c.rel_lift), float(c.rel_ci_low), float(c.rel_ci_high), float(c.p_value),
                            float(res.variance_reduction))
    return Comparison(metric, control, treatment, n_c, n_t, float(raw.control), float(raw.treatment),
                      float(raw.diff), float(raw.ci_low), float(raw.ci_high), float(raw.rel_lift),
                      float(raw.rel_ci_low), float(raw.rel_ci_high), float(raw.p_value),
                      "delta-method z-test on per-user sums" if metric == "ctr" else "two-sample z-test on per-user 0/1",
                      mde=power.mde, mde_rel=power.mde_rel, cuped=cuped), power


def analyse_online(log_dir: Path, config: OnlineConfig = OnlineConfig()) -> Report:
    """Read a log directory and build the online report (raises ReportInputError on bad input)."""
    logs = read_experiment(log_dir)
    alpha = config.alpha
    target = config.target_lift or (logs.spec.target_lift if logs.spec else None) or DEFAULT_TARGET_LIFT
    names = variant_order(logs)
    if len(names) < 2:
        raise ReportInputError(f"{logs.log_dir / 'exposures.jsonl'}: only variant {names[0]!r} was served and there is no "
                               "experiment.json declaring others; nothing to compare")
    control, treatments = names[0], names[1:]
    report = Report("online", f"A/B report — {logs.spec.name if logs.spec else Path(log_dir).name}",
                    {"experiment": str(log_dir), "control": control, "attribution_window_s": config.attribution_window_s,
                     "target_lift": target}, alpha, [], [])

    for note in logs.notes:
        report.warn("LOG_GAP", "warning", note)
    raw_exp, raw_ev = logs.exposures.height, logs.events.height
    logs = ExperimentLogs(logs.log_dir, logs.exposures.unique("exposure_id", keep="first", maintain_order=True),
                          logs.events.unique("event_id", keep="first", maintain_order=True), logs.spec, logs.notes)
    if raw_exp > logs.exposures.height or raw_ev > logs.events.height:
        report.notes.append(f"Dropped duplicate log lines: {raw_exp - logs.exposures.height} exposures, "
                            f"{raw_ev - logs.events.height} events (same id logged twice).")
    interleaved = (logs.spec is not None and logs.spec.mode == "interleave") or \
        logs.exposures["teams"].null_count() < logs.exposures.height
    _guardrails(report, logs, sorted(logs.exposures["variant"].unique().to_list()) if interleaved else names)
    served = pl.col("status").is_null() | (pl.col("status") < 400)
    logs = ExperimentLogs(logs.log_dir, logs.exposures.filter(served), logs.events, logs.spec, logs.notes)
    _ope_note(report, logs)
    if interleaved:
        from training.ab.interleaving_report import analyse_interleaving

        analyse_interleaving(report, logs, control, treatments, alpha, config.attribution_window_s)
        decide_report(report, PRIMARY_METRIC)
        return report
    if logs.spec and logs.spec.start_ts is not None:
        early = logs.exposures.filter(pl.col("ts") < logs.spec.start_ts).height
        if early:
            report.warn("EARLY_EXPOSURES", "warning", f"{early} exposures are logged before the experiment's "
                        "start_ts; check the experiment window or the serving clock.")

    clicks = attributed_clicks(logs.exposures, logs.events, config.attribution_window_s)
    users = user_table(logs, clicks)
    crossed = users.filter(pl.col("n_variants") > 1).height
    if crossed:
        report.warn("CROSSOVER", "warning", f"{crossed} users were exposed to more than one variant and are "
                    "excluded; assignment should be sticky per user.")
    users = users.filter(pl.col("n_variants") == 1)
    undeclared = users.filter(~pl.col("variant").is_in(names)).group_by("variant").len()
    for variant, n in undeclared.iter_rows():
        report.warn("UNDECLARED_VARIANT", "warning", f"variant {variant!r} ({n} users) is not declared in "
                    "experiment.json and is excluded.")
    users = users.filter(pl.col("variant").is_in(names))
    counts = dict(users.group_by("variant").len().iter_rows())

    weights = logs.spec.variants if logs.spec else {v: 1.0 for v in names}
    _check_sample_ratio(report, counts, weights, "experiment.json" if logs.spec else "equal split (no experiment.json)")
    _variants_and_comparisons(report, users, control, treatments, counts, weights, alpha, target)
    report.timeline = _timeline(logs.exposures, clicks, users, control, treatments, alpha, config.timeline_points)
    _sequential(report, logs, clicks, users, control, alpha, target)
    report.methods = _methods(config, alpha, target)
    decide_report(report, PRIMARY_METRIC)
    return report


def _ope_note(report: Report, logs: ExperimentLogs) -> None:
    """Say whether these logs support off-policy evaluation (the estimate itself needs a candidate run)."""
    probs = logs.exposures.filter(pl.col("teams").is_null()).select(pl.col("propensities").explode().fill_null(1.0))
    if probs.is_empty():
        return
    if probs.select((pl.col("propensities") >= 1.0).all()).item():
        report.notes.append("Off-policy evaluation is impossible for these logs: every logged propensity is 1 "
                            "(deterministic ranking), so they say nothing about items that were never shown.")
    else:
        report.notes.append(f"These logs carry propensities below 1: estimate a candidate run off-policy with "
                            f"`recsys ab-report --ope --logs {logs.log_dir} --policy RUN_DIR`.")


def _guardrails(report: Report, logs: ExperimentLogs, names: list[str]) -> None:
    declared = logs.spec.guardrails if logs.spec else {}
    values = measure(logs.exposures, names, logs.spec.catalogue_size if logs.spec else None)
    report.guardrails = [g.to_dict() for g in check(declared, values)]
    for variant, measured in values.items():
        failed = logs.exposures.filter((pl.col("variant") == variant) & (pl.col("status") >= 400)).height
        if failed:
            report.notes.append(f"{failed} failed requests of {variant} (status >= 400) count toward its error rate and "
                                "nowhere else.")


def _check_sample_ratio(report: Report, counts: dict[str, int], weights: dict[str, float], source: str) -> None:
    srm = sample_ratio_check(counts, weights)
    report.srm = {"observed": srm.observed, "expected": srm.expected, "chi2": srm.chi2, "p_value": srm.p_value,
                  "threshold": SRM_ALPHA, "mismatch": srm.mismatch, "weights_from": source}
    if srm.mismatch:
        obs = ", ".join(f"{v}: {srm.observed[v]:,} (expected {srm.expected[v]:,.0f})" for v in weights)
        report.warn("SRM", "error", f"SAMPLE RATIO MISMATCH (chi-square p = {srm.p_value:.2g} < {SRM_ALPHA}): users per variant "
                    f"{obs}. Assignment or logging is broken; do not trust the lifts below until this is explained.")


def _power_warning(metric: str, comp: Comparison, power: PowerCheck, alpha: float, target: float) -> str:
    if not np.isfinite(power.mde_rel):
        return (f"{metric} ({comp.treatment} vs {comp.control}): the metric does not vary "
                "(no events of that kind?), so no effect can be detected or ruled out.")
    return (f"{metric} ({comp.treatment} vs {comp.control}): with {comp.n_control:,} / {comp.n_treatment:,} "
            f"users the minimum detectable effect (alpha {alpha}, power 0.8) is ±{power.mde_rel:.1%} relative "
            f"(±{power.mde:.4g} absolute); the target is {target:.0%}, which needs ~{power.users_needed:,.0f} users per arm. "
            "A non-significant result here is not evidence of no effect.")


def _variants_and_comparisons(report: Report, users: pl.DataFrame, control: str, treatments: list[str],
                              counts: dict[str, int], weights: dict[str, float], alpha: float, target: float) -> None:
    if counts.get(control, 0) < 2:
        raise ReportInputError(f"control variant {control!r} has {counts.get(control, 0)} users; need at least 2 to compare")
    total_w, total_n = sum(weights.values()), max(sum(counts.values()), 1)
    intervals: dict[str, dict[str, Interval]] = {v: {} for v in [control, *treatments]}
    no_cuped: set[str] = set()
    for treatment in treatments:
        if counts.get(treatment, 0) < 2:
            report.warn("EMPTY_VARIANT", "warning", f"variant {treatment!r} has {counts.get(treatment, 0)} users; not compared.")
            continue
        for metric, cols in METRICS.items():
            y_c, x_c, pre_c = _arm(users, control, cols)
            y_t, x_t, pre_t = _arm(users, treatment, cols)
            res = compare_ratio(y_c, x_c, y_t, x_t, pre_c, pre_t, alpha)
            comp, power = _comparison(metric, control, treatment, res, len(y_c), len(y_t), alpha, target)
            report.comparisons.append(comp)
            if res.cuped is None:
                no_cuped.add(metric)
            z = float(stats.norm.ppf(1 - alpha / 2))
            for name, val, var in ((control, res.raw.control, res.raw.var_control),
                                   (treatment, res.raw.treatment, res.raw.var_treatment)):
                half = float(z * np.sqrt(var))
                intervals[name][metric] = Interval(float(val), float(val) - half, float(val) + half)
            if power.underpowered:
                report.warn("UNDERPOWERED", "warning", _power_warning(metric, comp, power, alpha, target))
    if no_cuped:
        report.notes.append(f"CUPED not applied to {', '.join(sorted(no_cuped))}: no pre-period activity to use as covariate.")
    if report.comparisons:
        adjusted = multipletests([c.primary_p for c in report.comparisons], alpha=alpha, method="holm")[1]
        for comp, p in zip(report.comparisons, adjusted):
            comp.p_adjusted = float(p)
    sums = users.group_by("variant").agg(pl.col("exposures", "clicks", "converted").sum())
    sums = {row[0]: row[1:] for row in sums.iter_rows()}
    for name in [control, *treatments]:
        exposures, clicks, converted = sums.get(name, (0, 0, 0))
        report.variants.append(VariantSummary(
            name, "control" if name == control else "treatment", counts.get(name, 0), intervals[name],
            {"exposures": int(exposures), "attributed_clicks": int(clicks), "converted_users": int(converted),
             "expected_share": weights[name] / total_w, "observed_share": counts.get(name, 0) / total_n}))


def _timeline(exposures: pl.DataFrame, clicks: pl.DataFrame, users: pl.DataFrame, control: str,
              treatments: list[str], alpha: float, points: int) -> list[TimelinePoint]:
    """Cumulative CTR lift at evenly spaced cut-offs (20 group-bys, not a loop over rows)."""
    variant_of = users.select("user_id", "variant")
    exposures = exposures.select("user_id", "ts").join(variant_of, on="user_id", how="inner")
    clicks = clicks.join(variant_of, on="user_id", how="inner")
    t0, t1 = exposures["ts"].min(), max(exposures["ts"].max(), clicks["ts"].max() or 0.0)
    out: list[TimelinePoint] = []
    for cut in np.linspace(t0, t1, points + 1)[1:]:
        seen = exposures.filter(pl.col("ts") <= cut).group_by("user_id", "variant").agg(exposures=pl.len())
        per_user = seen.join(clicks.filter(pl.col("ts") <= cut).group_by("user_id").agg(clicks=pl.len()),
                             on="user_id", how="left").with_columns(pl.col("clicks").fill_null(0))
        for treatment in treatments:
            y_c, x_c = _arm(per_user, control, ("clicks", "exposures"))
            y_t, x_t = _arm(per_user, treatment, ("clicks", "exposures"))
            if min(len(y_c), len(y_t)) < 2 or y_c.sum() == 0:
                continue
            d = compare_ratio(y_c, x_c, y_t, x_t, alpha=alpha).raw
            out.append(TimelinePoint(float(cut), treatment, float(d.rel_lift), float(d.rel_ci_low),
                                     float(d.rel_ci_high), len(y_c) + len(y_t)))
    return out


def daily_cuts(exposures: pl.DataFrame, start_ts: float | None, max_looks: int = 366) -> list[float]:
    """Cut-off times of the daily looks: start + 1 day, + 2 days, ..., and the last log time."""
    t0 = start_ts if start_ts is not None else float(exposures["ts"].min())
    t1 = float(exposures["ts"].max())
    days = int(np.ceil(max(t1 - t0, 0.0) / DAY))
    cuts = [t0 + d * DAY for d in range(1, min(days, max_looks) + 1)]
    return [c for c in cuts if c < t1] + [t1]


def _sequential(report: Report, logs: ExperimentLogs, clicks: pl.DataFrame, users: pl.DataFrame, control: str,
                alpha: float, target: float) -> None:
    """Always-valid p-value and confidence sequence per metric over the daily looks (see `sequential`)."""
    cuts = daily_cuts(logs.exposures, logs.spec.start_ts if logs.spec else None)
    variant_of = users.select("user_id", "variant", "first_ts", "pre_clicks", "pre_conversions")
    exposures = logs.exposures.select("user_id", "ts").join(variant_of, on="user_id", how="inner")
    clicks = clicks.join(variant_of.select("user_id"), on="user_id", how="inner")
    conversions = (logs.events.filter(pl.col("event_type") == "conversion").select("user_id", "ts")
                   .join(variant_of.select("user_id", "first_ts"), on="user_id", how="inner")
                   .filter(pl.col("ts") >= pl.col("first_ts")))
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for cut in cuts:
        seen = (exposures.filter(pl.col("ts") <= cut)
                .group_by("user_id").agg(pl.col("variant", "pre_clicks", "pre_conversions").first(), exposures=pl.len()))
        per_user = (seen.join(clicks.filter(pl.col("ts") <= cut).group_by("user_id").agg(clicks=pl.len()),
                              on="user_id", how="left")
                    .join(conversions.filter(pl.col("ts") <= cut).group_by("user_id").agg(converted=pl.lit(1).first()),
                          on="user_id", how="left")
                    .with_columns(pl.col("clicks", "converted").fill_null(0), one=pl.lit(1)))
        for comp in report.comparisons:
            cols = METRICS[comp.metric]
            y_c, x_c, pre_c = _arm(per_user, control, cols)
            y_t, x_t, pre_t = _arm(per_user, comp.treatment, cols)
            key = (comp.metric, comp.treatment)
            if min(len(y_c), len(y_t)) < 2:
                series.setdefault(key, []).append((cut, float("nan"), float("nan")))
                continue
            res = compare_ratio(y_c, x_c, y_t, x_t, pre_c, pre_t, alpha).primary
            series.setdefault(key, []).append((cut, float(res.diff), float(res.se ** 2)))
    for comp in report.comparisons:
        ts, diff, var = (np.array(v) for v in zip(*series[(comp.metric, comp.treatment)]))
        tau = target * abs(comp.control_value)
        if not tau > 0:
            tau = float(np.sqrt(np.nanmax(var))) if np.isfinite(var).any() else 1.0
        res = msprt(diff, var, tau, alpha)
        p, low, high = float(res.always_valid_p[-1]), float(res.cs_low[-1]), float(res.cs_high[-1])
        base = abs(comp.control_value) or float("nan")
        comp.sequential = {
            "always_valid_p": p, "decision": decide(p, high, alpha, target * abs(comp.control_value)),
            "cs_low": low, "cs_high": high, "rel_cs_low": low / base, "rel_cs_high": high / base,
            "looks": len(cuts), "tau": tau,
            "history": [{"ts": float(t), "always_valid_p": float(pv), "cs_low": float(lo), "cs_high": float(hi)}
                        for t, pv, lo, hi in zip(ts, res.always_valid_p, res.cs_low, res.cs_high)]}


def _methods(config: OnlineConfig, alpha: float, target: float) -> list[str]:
    return [
        f"Unit: user. CTR = attributed clicks / exposures (click on an item shown to the same user at most "
        f"{config.attribution_window_s / 3600:g} h earlier); conversion rate = share of exposed users with a conversion "
        "after their first exposure.",
        "CTR CIs use the delta method on per-user sums (exposures are not independent); conversion uses the per-user 0/1 mean. "
        f"Two-sided z-tests at alpha {alpha}; verdicts use each metric's own p-value (consistent with its CI), "
        "Holm-adjusted p-values over all metrics and treatments are shown beside them for family-wise control.",
        "CUPED: covariate = the same event count in the user's pre-period (before first exposure or start_ts); theta pooled over "
        "arms; 'variance reduction' = 1 - Var(CUPED estimate) / Var(raw estimate). The verdict uses CUPED when applied.",
        f"SRM: chi-square of users per variant vs configured weights; flagged when p < {SRM_ALPHA}.",
        f"Power: minimum detectable effect at alpha {alpha}, power 0.8 for the observed users (statsmodels NormalIndPower); "
        f"under-powered when it exceeds the target lift of {target:.0%}.",
        "Sequential monitoring (safe to look every day): at each daily cut the same estimator (CUPED where applied) is fed "
        "to a normal-mixture SPRT (mSPRT, Johari et al. 2017) with mixture scale tau = target lift x control value. "
        f"The always-valid p-value and the confidence sequence hold at every look at once (level {1 - alpha:.0%}). "
        "'stop: significant' when the always-valid p < alpha; 'stop: futile' when the whole sequence lies below the "
        "target effect; else 'keep going'. rel_cs_* divide the sequence by the control value (approximate).",
    ]
