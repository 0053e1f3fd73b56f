"""A/B report: how often a planted CTR lift is detected (raw vs CUPED), and how long a report takes.

Part 1 (statistics): `--reps` simulated experiments per planted lift, vectorised through the same
`compare_ratio` the report uses; prints the share of experiments with p < 0.05 (lift 0 = the A/A
false-positive rate), the median CUPED variance reduction and the power statsmodels predicts at
that lift for the CUPED estimator (from the report's own MDE). Part 2 (speed): simulated logs of growing size through `analyse_online` + `write_report`
(one process; wall seconds per stage, log size, peak RSS). The load average is printed: on a
shared machine it explains most of the variance.

    .venv/bin/python benchmarks/ab_power_bench.py --users 20000 --reps 300 --sizes 20000 100000
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.ab.online import analyse_online  # noqa: E402
from training.ab.render import write_report  # noqa: E402
from training.ab.simulate import SimulationConfig, simulate_arms, write_logs  # noqa: E402
from training.ab.stats import compare_ratio  # noqa: E402
from training.ab.validity import two_sample_power  # noqa: E402


def power_table(users: int, reps: int, lifts: list[float]) -> None:
    print(f"\n#### Detection rate of a planted CTR lift ({users:,} users, 50/50, {reps} experiments per row, alpha 0.05)\n")
    print("| planted lift | raw: p < 0.05 | CUPED: p < 0.05 | CUPED variance reduction (median) "
          "| predicted power (CUPED, statsmodels) |")
    print("|---:|---:|---:|---:|---:|")
    for k, lift in enumerate(lifts):
        arms = simulate_arms(SimulationConfig(n_users=users, ctr_lift={"B": lift}), reps=reps, seed=100 + k)
        a, b = arms["A"], arms["B"]
        res = compare_ratio(a.clicks, a.exposures, b.clicks, b.exposures, a.pre_clicks, b.pre_clicks)
        power = two_sample_power(float(np.median(res.sd_control)), float(np.median(res.sd_treatment)), a.clicks.shape[1],
                                 b.clicks.shape[1], float(np.median(res.raw.control)), 0.05)
        predicted = "—" if lift == 0 else _predicted(power.mde_rel, lift)
        print(f"| {lift:.1%} | {(res.raw.p_value < 0.05).mean():.3f} | {(res.cuped.p_value < 0.05).mean():.3f} | "
              f"{np.median(res.variance_reduction):.1%} | {predicted} |")


def _predicted(mde_rel: float, lift: float) -> str:
    """Power at `lift` from the MDE at 80 % power (normal approximation, two-sided)."""
    from scipy import stats

    z_a, z_b = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    se_rel = mde_rel / (z_a + z_b)
    return f"{stats.norm.sf(z_a - lift / se_rel):.3f}"


def speed_table(sizes: list[int]) -> None:
    print("\n#### Report wall time on simulated logs (analysis + HTML/JSON/MD)\n")
    print("| users | exposures | events | log MB | simulate s | analyse s | render s | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            logs = write_logs(Path(tmp) / "logs", SimulationConfig(n_users=n), seed=1)
            t1 = time.perf_counter()
            report = analyse_online(logs)
            t2 = time.perf_counter()
            write_report(report, Path(tmp) / "report.html")
            t3 = time.perf_counter()
            n_exp = sum(1 for _ in open(logs / "exposures.jsonl"))
            n_ev = sum(1 for _ in open(logs / "events.jsonl"))
            mb = sum(f.stat().st_size for f in logs.iterdir()) / 2**20
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {n:,} | {n_exp:,} | {n_ev:,} | {mb:.0f} | {t1 - t0:.1f} | {t2 - t1:.1f} | {t3 - t2:.1f} | {rss:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--lifts", type=float, nargs="+", default=[0.0, 0.025, 0.05, 0.075, 0.10])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    power_table(args.users, args.reps, args.lifts)
    speed_table(args.sizes)


if __name__ == "__main__":
    main()
