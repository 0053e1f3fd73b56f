"""Always-valid monitoring: look every day, keep the false-positive rate, still find real lifts.

Seeded simulations of whole experiments inspected at every daily cut, through the estimator and
the mSPRT the online report uses.
"""
from __future__ import annotations

import numpy as np
import pytest

from training.ab.online import analyse_online
from training.ab.sequential import FUTILE, KEEP_GOING, SIGNIFICANT, decide, fixed_horizon_rejects, msprt
from training.ab.simulate import SimulationConfig, simulate_daily_cuts, true_metrics, write_logs
from training.ab.stats import compare_ratio

ALPHA, LOOKS, TARGET = 0.05, 14, 0.05


def _daily(cfg: SimulationConfig, reps: int, seed: int):
    """(diff, var, control value) per look, shape (reps, looks), as the report computes them."""
    diffs, variances, control = [], [], []
    for cut in simulate_daily_cuts(cfg, reps, LOOKS, seed=seed):
        res = compare_ratio(cut["A"][0], cut["A"][1], cut["B"][0], cut["B"][1]).raw
        diffs.append(res.diff)
        variances.append(res.se ** 2)
        control.append(res.control)
    return np.stack(diffs, -1), np.stack(variances, -1), control[-1]


def test_a_a_inspected_every_day_keeps_the_false_positive_rate_below_alpha():
    cfg = SimulationConfig(n_users=2_000, ctr_lift={})
    diff, var, control = _daily(cfg, reps=1_000, seed=7)
    always_valid = msprt(diff, var, TARGET * control, ALPHA)
    fpr = float((always_valid.always_valid_p[:, -1] < ALPHA).mean())
    peeking = float(fixed_horizon_rejects(diff, var, ALPHA).mean())
    # The fixed-horizon test, re-run daily, stops on noise far more often than alpha: what this fixes.
    assert peeking > 2 * ALPHA, peeking
    assert fpr <= ALPHA, fpr
    # ... while the same test run once at the end is calibrated (the estimator itself is right).
    assert abs(fixed_horizon_rejects(diff[:, -1:], var[:, -1:], ALPHA).mean() - ALPHA) < 0.025


def test_a_planted_lift_is_detected_and_the_confidence_sequence_covers_it_at_every_look():
    cfg = SimulationConfig(n_users=10_000, ctr_lift={"B": 0.2})
    diff, var, control = _daily(cfg, reps=200, seed=11)
    res = msprt(diff, var, TARGET * control, ALPHA)
    truth = true_metrics(cfg)
    true_diff = truth["B"]["ctr"] - truth["A"]["ctr"]
    assert (res.always_valid_p[:, -1] < ALPHA).mean() >= 0.85
    covered_always = ((res.cs_low <= true_diff) & (true_diff <= res.cs_high)).all(axis=-1)
    assert covered_always.mean() >= 1 - ALPHA
    assert np.all(np.diff(res.cs_high - res.cs_low, axis=-1) <= 1e-12)  # running intersection: never widens


def test_decisions_and_looks_without_information():
    res = msprt(np.array([0.0, 0.1]), np.array([0.0, np.nan]), 0.01, ALPHA)
    assert res.always_valid_p.tolist() == [1.0, 1.0] and np.isinf(res.cs_high).all()
    assert decide(0.01, 0.5, ALPHA, 0.1) == SIGNIFICANT
    assert decide(0.4, 0.05, ALPHA, 0.1) == FUTILE
    assert decide(0.4, 0.2, ALPHA, 0.1) == KEEP_GOING


@pytest.mark.parametrize("lift, expected", [(0.15, SIGNIFICANT), (0.0, KEEP_GOING)])
def test_online_report_carries_a_sequential_object_per_metric(tmp_path, lift, expected):
    logs = write_logs(tmp_path, SimulationConfig(n_users=20_000, ctr_lift={"B": lift}), seed=3)
    report = analyse_online(logs)
    data = report.to_dict()
    ctr = next(c for c in data["comparisons"] if c["metric"] == "ctr")
    assert {"always_valid_p", "decision"} <= set(ctr["sequential"]) and ctr["sequential"]["looks"] == 14
    assert ctr["sequential"]["decision"] == expected
    assert list(data)[:2] == ["decision", "reasons"]
    assert data["decision"] == ("ship" if lift else "keep_running") and data["reasons"]
