"""Checks that say whether an experiment's numbers can be trusted at all: sample-ratio mismatch
and statistical power.

An SRM (users split differently from the configured weights) means assignment or logging is
broken, and then every lift in the report is suspect, however small its p-value. An under-powered
experiment is the opposite failure: "no significant difference" only means the traffic could not
have seen an effect of the size anyone cares about. Both are surfaced as loud warnings.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestPower

SRM_ALPHA = 0.001  # the usual SRM threshold: strict, because this check runs on every experiment
POWER = 0.8
# Per-user sds below this (relative to the metric) are float round-off of identical values, not
# variation: statsmodels cannot solve for power there and would warn instead of answering.
_NOISE = 1e-9
DEFAULT_TARGET_LIFT = 0.05  # relative lift an experiment should be able to see, unless experiment.json says otherwise


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness-of-fit of observed users per variant against the configured weights."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA


def sample_ratio_check(observed: Mapping[str, int], weights: Mapping[str, float]) -> SampleRatioCheck:
    """Compare user counts per variant with `weights` (any positive scale) via scipy.stats.chisquare.

    Variants present in `weights` but absent from `observed` count as 0 users, which is itself
    the most blatant mismatch.
    """
    names = list(weights)
    obs = np.array([observed.get(v, 0) for v in names], float)
    w = np.array([weights[v] for v in names], float)
    assert (w > 0).all(), f"variant weights must be positive, got {dict(weights)}"
    exp = obs.sum() * w / w.sum()
    if obs.sum() == 0 or len(names) < 2:
        return SampleRatioCheck(dict(zip(names, obs.astype(int).tolist())), dict(zip(names, exp.tolist())), 0.0, 1.0)
    res = stats.chisquare(obs, exp)
    return SampleRatioCheck(dict(zip(names, obs.astype(int).tolist())), dict(zip(names, exp.tolist())),
                            float(res.statistic), float(res.pvalue))


@dataclass(frozen=True)
class PowerCheck:
    """Smallest effect detectable with the observed traffic, and the traffic a target effect needs."""

    mde: float  # absolute, in the metric's units
    mde_rel: float  # relative to the control value
    target_lift: float
    users_needed: float  # per arm (offline: paired users) for `target_lift` at the same alpha/power

    @property
    def underpowered(self) -> bool:
        return not np.isfinite(self.mde_rel) or self.mde_rel > self.target_lift


def _rel(mde: float, baseline: float) -> float:
    return abs(mde / baseline) if baseline else float("inf")


def _users_needed(solve: Callable[[float], float], effect_size: float) -> float:
    """Sample size for `effect_size` (Cohen's d); inf when the target is zero or the solver gives up."""
    if not effect_size > 0:
        return float("inf")
    try:
        return float(solve(effect_size))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return float("inf")


def two_sample_power(sd_control: float, sd_treatment: float, n_control: int, n_treatment: int,
                     baseline: float, alpha: float, target_lift: float = DEFAULT_TARGET_LIFT) -> PowerCheck:
    """MDE of an independent two-arm test (statsmodels NormalIndPower) for a per-user metric.

    `sd_*` are per-user sds of the (linearised, possibly CUPED-adjusted) metric, so the power of
    the estimator actually used is what is reported.
    """
    sd = float(np.sqrt(((n_control - 1) * sd_control**2 + (n_treatment - 1) * sd_treatment**2)
                       / max(n_control + n_treatment - 2, 1)))
    if not np.isfinite(sd) or sd <= _NOISE * max(1.0, abs(baseline)) or min(n_control, n_treatment) < 2:
        return PowerCheck(float("nan"), float("nan"), target_lift, float("nan"))
    power = NormalIndPower()
    ratio = n_treatment / n_control
    d = float(power.solve_power(effect_size=None, nobs1=n_control, alpha=alpha, power=POWER, ratio=ratio))
    needed = _users_needed(lambda es: power.solve_power(effect_size=es, nobs1=None, alpha=alpha, power=POWER, ratio=1.0),
                           target_lift * abs(baseline) / sd)
    return PowerCheck(d * sd, _rel(d * sd, baseline), target_lift, needed)


def paired_power(sd_diff: float, n: int, baseline: float, alpha: float,
                 target_lift: float = DEFAULT_TARGET_LIFT) -> PowerCheck:
    """MDE of the paired t-test (statsmodels TTestPower on per-user differences)."""
    if not np.isfinite(sd_diff) or sd_diff <= _NOISE * max(1.0, abs(baseline)) or n < 3:
        return PowerCheck(float("nan"), float("nan"), target_lift, float("nan"))
    power = TTestPower()
    d = float(power.solve_power(effect_size=None, nobs=n, alpha=alpha, power=POWER))
    needed = _users_needed(lambda es: power.solve_power(effect_size=es, nobs=None, alpha=alpha, power=POWER),
                           target_lift * abs(baseline) / sd_diff)
    return PowerCheck(d * sd_diff, _rel(d * sd_diff, baseline), target_lift, needed)
