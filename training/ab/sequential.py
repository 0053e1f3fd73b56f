"""Always-valid inference: look at an experiment every day without inflating false positives.

A fixed-horizon z-test is valid once, at the planned end. Checking it daily and stopping at the
first p < 0.05 gives a false-positive rate of 15-30 % (the more looks, the worse). The mixture
sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always valid inference",
2017; Robbins 1970) is valid at every look at once:

For an estimate `d_n` of the difference with variance `V_n` (the delta-method variance the
fixed-horizon report uses) and a normal mixture N(0, tau^2) over the true difference theta,

    Lambda_n(theta) = sqrt(V_n / (V_n + tau^2)) * exp(tau^2 (d_n - theta)^2 / (2 V_n (V_n + tau^2)))

is a (mixture) likelihood ratio, a martingale under theta, so by Ville's inequality
P(sup_n Lambda_n(theta) >= 1/alpha) <= alpha. Hence:

* always-valid p-value  p_n = min(p_{n-1}, 1 / Lambda_n(0));
* confidence sequence   {theta : Lambda_n(theta) < 1/alpha}, intersected over looks, which
  covers the true difference at every look simultaneously with probability >= 1 - alpha.

tau (the mixture's scale) is the effect the experiment is designed to find: the target relative
lift times the control value. Decisions per metric: "stop: significant" when p_n < alpha;
"stop: futile" when the whole confidence sequence lies below the target effect (the effect the
experiment was run for is ruled out); otherwise "keep going".

Functions work along the last axis (looks) and broadcast over leading axes, so simulations
check thousands of experiments through the code the report uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Decision = Literal["stop: significant", "keep going", "stop: futile"]
SIGNIFICANT: Decision = "stop: significant"
KEEP_GOING: Decision = "keep going"
FUTILE: Decision = "stop: futile"


@dataclass(frozen=True)
class SequentialResult:
    """Per look (last axis): the always-valid p-value and the running confidence sequence."""

    always_valid_p: np.ndarray
    cs_low: np.ndarray
    cs_high: np.ndarray


def msprt(diff: np.ndarray, var: np.ndarray, tau: np.ndarray | float, alpha: float) -> SequentialResult:
    """Normal-mixture SPRT over looks (last axis) of a difference estimate and its variance.

    Looks with no information yet (var not finite or <= 0) leave the p-value at 1 and the
    sequence unbounded.
    """
    diff, var = np.asarray(diff, float), np.asarray(var, float)
    tau2 = np.asarray(tau, float)[..., None] ** 2 if np.ndim(tau) else float(tau) ** 2
    ok = np.isfinite(var) & (var > 0) & np.isfinite(diff)
    v = np.where(ok, var, 1.0)
    d = np.where(ok, diff, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_lambda = 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))
        p = np.where(ok, np.minimum(1.0, np.exp(-log_lambda)), 1.0)
        radius = np.sqrt(2 * v * (v + tau2) / tau2 * (np.log(1 / alpha) + 0.5 * np.log((v + tau2) / v)))
    low = np.where(ok, d - radius, -np.inf)
    high = np.where(ok, d + radius, np.inf)
    return SequentialResult(np.minimum.accumulate(p, axis=-1), np.maximum.accumulate(low, axis=-1),
                            np.minimum.accumulate(high, axis=-1))


def decide(always_valid_p: float, cs_high: float, alpha: float, target_effect: float) -> Decision:
    """The monitoring line for one metric at the latest look (higher is better)."""
    if always_valid_p < alpha:
        return SIGNIFICANT
    if np.isfinite(cs_high) and target_effect > 0 and cs_high < target_effect:
        return FUTILE
    return KEEP_GOING


def fixed_horizon_rejects(diff: np.ndarray, var: np.ndarray, alpha: float) -> np.ndarray:
    """What a dashboard that re-runs the fixed-horizon z-test at every look concludes: True once any
    look has p < alpha (the peeking the always-valid p-value replaces), per leading index."""
    from scipy import stats

    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(np.asarray(diff, float)) / np.sqrt(np.asarray(var, float))
    return np.nan_to_num(2 * stats.norm.sf(z), nan=1.0).min(axis=-1) < alpha
