"""Interleaved experiments: which variant do the same users prefer, from team-draft logs.

Each exposure shows one slate mixed from the control's and the treatment's rankings
(`recsys.interleaving.team_draft`) and logs the team of every shown item. A click is credited to
the team of the item in the user's most recent exposure that showed it (within the attribution
window). Per user: a *win* for the treatment when its items got more credited clicks than the
control's, a *loss* when fewer, a *tie* otherwise (including users who did not click).

preference = (wins - losses) / users, in [-1, 1]: positive means users prefer the treatment.
Its CI and p-value come from the one-sample t-test on the per-user scores (+1 / 0 / -1), so
the CI and p-value always agree; users, not clicks, are the unit (a user's clicks are not
independent).
"""
from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from training.ab.errors import ReportInputError
from training.ab.logs import ExperimentLogs
from training.ab.results import Report


def credited_clicks(exposures: pl.DataFrame, events: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """(user_id, team) of every click on an interleaved item shown to that user within the window."""
    clicks = events.filter(pl.col("event_type") == "click").select("user_id", "item_id", "ts").sort("ts")
    shown = (exposures.filter(pl.col("teams").is_not_null())
             .select("user_id", "ts", pl.col("items").alias("item_id"), pl.col("teams").alias("team"))
             .explode("item_id", "team")
             .join(clicks.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi")
             .with_columns(shown_ts=pl.col("ts")).sort("ts"))
    joined = clicks.join_asof(shown, on="ts", by=["user_id", "item_id"], strategy="backward", tolerance=window_s,
                              check_sortedness=False)
    return joined.filter(pl.col("team").is_not_null()).select("user_id", "team")


def preference(scores: np.ndarray, alpha: float) -> tuple[float, float, float, float]:
    """Mean per-user score with its t-interval and two-sided p-value."""
    n = len(scores)
    mean = float(scores.mean())
    sd = float(scores.std(ddof=1)) if n > 1 else 0.0
    if sd == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n))
    return mean, mean - half, mean + half, float(stats.ttest_1samp(scores, 0.0).pvalue)


def analyse_interleaving(report: Report, logs: ExperimentLogs, control: str, treatments: list[str], alpha: float,
                         window_s: float) -> None:
    """Fill `report.interleaving` (and notes/methods) from team-draft logs."""
    if len(treatments) != 1:
        raise ReportInputError(f"interleaving compares exactly two variants; experiment.json declares {[control, *treatments]}")
    treatment = treatments[0]
    exposures = logs.exposures.filter(pl.col("teams").is_not_null())
    if exposures.is_empty():
        raise ReportInputError(f"{logs.log_dir / 'exposures.jsonl'}: experiment.json says mode \"interleave\" but no "
                               "exposure carries a 'teams' list")
    teams = exposures.select(pl.col("teams").explode()).to_series()
    unknown = sorted(set(teams.unique().to_list()) - {control, treatment})
    if unknown:
        raise ReportInputError(f"{logs.log_dir / 'exposures.jsonl'}: teams {unknown} are not the declared variants "
                               f"{control!r} and {treatment!r}")
    credited = credited_clicks(exposures, logs.events, window_s)
    per_user = (exposures.select("user_id").unique()
                .join(credited.group_by("user_id").agg(a=(pl.col("team") == control).sum(),
                                                      b=(pl.col("team") == treatment).sum()),
                      on="user_id", how="left")
                .with_columns(pl.col("a", "b").fill_null(0)))
    a, b = per_user["a"].to_numpy().astype(np.int64), per_user["b"].to_numpy().astype(np.int64)
    scores = np.sign(b - a).astype(float)
    pref, low, high, p = preference(scores, alpha)
    slots = teams.value_counts()
    share = {t: float(n / teams.len()) for t, n in slots.iter_rows()}
    report.interleaving = {
        "control": control, "treatment": treatment, "preference": pref, "ci_low": low, "ci_high": high, "p_value": p,
        "wins": int((scores > 0).sum()), "losses": int((scores < 0).sum()), "ties": int((scores == 0).sum()),
        "users": len(scores), "credited_clicks": {control: int(a.sum()), treatment: int(b.sum())},
        "slot_share": {control: share.get(control, 0.0), treatment: share.get(treatment, 0.0)},
        "exposures": exposures.height, "method": "team-draft interleaving; per-user win/loss/tie, one-sample t-test",
    }
    if abs(share.get(control, 0.0) - 0.5) > 0.05:
        report.warn("INTERLEAVING_BALANCE", "warning", f"team {control} got {share.get(control, 0.0):.1%} of the "
                    "slots; team draft should give each team about half. Check the serving hook.")
    report.methods = [
        "Team-draft interleaving (Radlinski et al. 2008): each slate mixes both rankings; every shown item's team is "
        "logged, and a click is credited to the team of that item in the user's latest exposure within the attribution "
        f"window ({window_s / 3600:g} h).",
        f"Per user: win for {treatment} if its items got more credited clicks than {control}'s, loss if fewer, tie "
        "otherwise. preference = (wins - losses) / users; CI and p-value from the one-sample t-test on the per-user scores.",
    ]
