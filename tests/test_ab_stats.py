"""The A/B statistics keep their promises on simulated experiments with known truth.

Every study runs hundreds of experiments in one vectorised call through the same functions the
report uses, so "5 % false positives" and "95 % coverage" are measured, not assumed.
Binomial tolerances: with 500 A/A runs at alpha 0.05 the false-positive count has sd ~ 1 %,
so [0.02, 0.09] fails only on a real bug.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.ab.simulate import SimulationConfig, simulate_arms, true_metrics
from training.ab.stats import compare_ratio, paired_compare
from training.ab.validity import paired_power, sample_ratio_check, two_sample_power

AA_REPS = 500


def _ratio(arms, metric: str, cuped: bool = True):
    a, b = arms["A"], arms["B"]
    if metric == "ctr":
        args = (a.clicks, a.exposures, b.clicks, b.exposures, a.pre_clicks, b.pre_clicks)
    else:
        conv_a, conv_b = (a.conversions > 0).astype(float), (b.conversions > 0).astype(float)
        args = (conv_a, np.ones_like(conv_a), conv_b, np.ones_like(conv_b), a.pre_conversions, b.pre_conversions)
    return compare_ratio(*args) if cuped else compare_ratio(*args[:4])


@pytest.fixture(scope="module")
def aa_arms():
    return simulate_arms(SimulationConfig(n_users=2_000, ctr_lift={}), reps=AA_REPS, seed=1)


@pytest.mark.parametrize("metric", ["ctr", "conversion_rate"])
def test_aa_false_positive_rate_stays_near_alpha(aa_arms, metric):
    res = _ratio(aa_arms, metric)
    assert 0.02 <= (res.raw.p_value < 0.05).mean() <= 0.09
    assert 0.02 <= (res.cuped.p_value < 0.05).mean() <= 0.09
    if metric == "ctr":  # continuous enough for a uniformity check: correct p-values are uniform under the null
        assert stats.kstest(res.raw.p_value, "uniform").pvalue > 0.001


def test_planted_ctr_lift_is_detected_and_its_ci_covers_the_truth():
    cfg = SimulationConfig(n_users=8_000, ctr_lift={"B": 0.20})
    truth = true_metrics(cfg)
    planted = truth["B"]["ctr"] - truth["A"]["ctr"]
    res = _ratio(simulate_arms(cfg, reps=200, seed=2), "ctr")
    for est in (res.raw, res.cuped):
        assert (est.p_value < 0.05).mean() > 0.9  # power
        assert 0.9 <= ((est.ci_low <= planted) & (planted <= est.ci_high)).mean() <= 0.99
        assert 0.9 <= ((est.rel_ci_low <= 0.20) & (0.20 <= est.rel_ci_high)).mean() <= 0.99
        assert abs(est.diff.mean() - planted) < 0.1 * planted  # unbiased, CUPED included


def test_mde_from_power_analysis_is_detected_80_percent_of_the_time():
    cfg = SimulationConfig(n_users=4_000, ctr_lift={})
    one = _ratio(simulate_arms(cfg, reps=1, seed=3), "ctr", cuped=False)
    power = two_sample_power(float(one.sd_control[0]), float(one.sd_treatment[0]), 2_000, 2_000,
                             float(one.raw.control[0]), alpha=0.05)
    lifted = SimulationConfig(n_users=4_000, ctr_lift={"B": power.mde_rel})
    detected = (_ratio(simulate_arms(lifted, reps=400, seed=4), "ctr", cuped=False).raw.p_value < 0.05).mean()
    assert 0.7 <= detected <= 0.9, f"MDE {power.mde_rel:.3f} detected in {detected:.2f} of runs"


def test_cuped_reduces_variance_when_the_pre_period_correlates(aa_arms):
    res = _ratio(aa_arms, "ctr")
    assert np.median(res.variance_reduction) > 0.05
    # the actual spread of the estimates across experiments shrinks, not just the reported SE
    assert res.cuped.diff.var() < 0.95 * res.raw.diff.var()

    rng = np.random.default_rng(5)
    pre = rng.normal(size=(300, 2, 1_000))
    y = pre + rng.normal(size=pre.shape)  # corr 0.71 -> reduction ~ 0.5
    ones = np.ones_like(y[:, 0])
    strong = compare_ratio(y[:, 0], ones, y[:, 1], ones, pre[:, 0], pre[:, 1])
    assert 0.45 < np.median(strong.variance_reduction) < 0.55
    noise = rng.normal(size=pre.shape)
    none = compare_ratio(y[:, 0], ones, y[:, 1], ones, noise[:, 0], noise[:, 1])
    assert abs(np.median(none.variance_reduction)) < 0.02
    assert 0.02 <= (strong.cuped.p_value < 0.05).mean() <= 0.09  # still a valid test


def test_delta_method_with_unit_denominator_equals_welch_t_test():
    rng = np.random.default_rng(6)
    a, b = rng.exponential(1.0, 4_000), rng.exponential(1.05, 5_000)
    ours = compare_ratio(a, np.ones_like(a), b, np.ones_like(b)).raw.p_value
    assert ours == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, abs=1e-3)


def test_sample_ratio_mismatch_detected_only_when_planted():
    assert sample_ratio_check({"A": 10_000, "B": 9_500}, {"A": 1, "B": 1}).mismatch
    assert not sample_ratio_check({"A": 10_040, "B": 9_960}, {"A": 1, "B": 1}).mismatch
    assert not sample_ratio_check({"A": 8_030, "B": 1_970}, {"A": 0.8, "B": 0.2}).mismatch
    assert sample_ratio_check({"A": 5_000, "B": 5_000}, {"A": 0.8, "B": 0.2}).mismatch
    assert sample_ratio_check({"A": 5_000}, {"A": 1, "B": 1}).mismatch  # a variant that logged nothing


def _paired_users(n: int, reps: int, delta: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user metrics of two models on the same users: shared difficulty, small model noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(1.2, 4.0, size=(n, reps))
    a = difficulty + rng.normal(0, 0.05, size=(n, reps))
    return a, difficulty + delta + rng.normal(0, 0.05, size=(n, reps))


def test_paired_aa_false_positive_rate_and_bootstrap_coverage():
    a, b = _paired_users(300, AA_REPS, 0.0, seed=7)
    res = paired_compare(a, b, n_resamples=1_000)
    assert 0.02 <= (res.p_value < 0.05).mean() <= 0.09
    assert 0.90 <= ((res.ci_low <= 0) & (0 <= res.ci_high)).mean() <= 0.99


def test_paired_planted_lift_detected_and_covered():
    a, b = _paired_users(400, 200, 0.015, seed=8)
    res = paired_compare(a, b, n_resamples=1_000)
    assert (res.p_value < 0.05).mean() > 0.9
    assert 0.9 <= ((res.ci_low <= 0.015) & (0.015 <= res.ci_high)).mean() <= 0.99
    # pairing is what makes this detectable: an unpaired test on the same data misses most of it
    assert (stats.ttest_ind(b, a, axis=0).pvalue < 0.05).mean() < 0.5
    assert paired_power(float(res.sd_diff[0]), 400, float(res.mean_control[0]), 0.05).mde < 0.015


def test_paired_bootstrap_is_reproducible_with_fixed_seed():
    a, b = _paired_users(200, 3, 0.0, seed=9)
    first, again = paired_compare(a, b, seed=0), paired_compare(a, b, seed=0)
    np.testing.assert_array_equal(first.ci_low, again.ci_low)
