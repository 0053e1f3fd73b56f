"""Experiments beyond the fixed-horizon A/B test: peeking, off-policy evaluation, interleaving.

Three seeded simulation studies through the same code the report runs:

1. Peeking: A/A experiments inspected at every one of N evenly spaced looks. "Fixed horizon"
   stops at the first look with z-test p < 0.05 (what a dashboard invites); "always valid" uses
   the report's mSPRT p-value. Also the share of experiments with a planted lift that each
   procedure detects by the last look.
2. Off-policy evaluation: in latent-factor worlds (`training.ab.world`) the logging policies
   serve with exploration slots; the candidate run is evaluated by `analyse_ope` from the JSON
   logs; coverage = share of seeds whose 95 % CI contains the candidate's exact online value.
   Also with exploration restricted to the logger's next 30 items (missing support) and with no
   exploration at all (deterministic logs).
3. Interleaving sensitivity: users needed for 80 % power by an A/B test of the pair vs by
   team-draft interleaving of the same pair, measured on the same simulated users.

    .venv/bin/python benchmarks/ab_experiments_bench.py --reps 2000 --ope-seeds 40 --sens-seeds 3

The mSPRT's mixture scale is the target effect (5 % of the control CTR), as in the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.ab.ope import analyse_ope  # noqa: E402
from training.ab.sequential import fixed_horizon_rejects, msprt  # noqa: E402
from training.ab.simulate import SimulationConfig, simulate_daily_cuts  # noqa: E402
from training.ab.stats import compare_ratio  # noqa: E402
from training.ab.world import WorldConfig, make_world, save_policy, sensitivity, truth, write_logs  # noqa: E402

ALPHA, TARGET = 0.05, 0.05


def _looks(cfg: SimulationConfig, reps: int, looks: int, seed: int):
    diffs, variances, control = [], [], []
    for cut in simulate_daily_cuts(cfg, reps, looks, seed=seed):
        res = compare_ratio(cut["A"][0], cut["A"][1], cut["B"][0], cut["B"][1]).raw
        diffs.append(res.diff)
        variances.append(res.se ** 2)
        control.append(res.control)
    return np.stack(diffs, -1), np.stack(variances, -1), control[-1]


def peeking_table(users: int, reps: int, looks_list: list[int], lift: float, power_users: int) -> None:
    print(f"\n#### Peeking: {reps} A/A experiments ({users:,} users, 50/50) inspected at every look, alpha {ALPHA}\n")
    print(f"| looks | fixed horizon, stop at first p < {ALPHA} | always valid (mSPRT) | "
          f"planted +{lift:.0%} ({power_users:,} users): fixed horizon, last look only | "
          f"planted +{lift:.0%}: always valid, any look |")
    print("|---:|---:|---:|---:|---:|")
    for k, looks in enumerate(looks_list):
        aa = SimulationConfig(n_users=users, ctr_lift={})
        diff, var, control = _looks(aa, reps, looks, seed=10 + k)
        fixed = fixed_horizon_rejects(diff, var, ALPHA).mean()
        valid = (msprt(diff, var, TARGET * control, ALPHA).always_valid_p[:, -1] < ALPHA).mean()
        diff, var, control = _looks(SimulationConfig(n_users=power_users, ctr_lift={"B": lift}), max(reps // 8, 100), looks,
                                    seed=50 + k)
        power_fixed = fixed_horizon_rejects(diff[:, -1:], var[:, -1:], ALPHA).mean()
        power_valid = (msprt(diff, var, TARGET * control, ALPHA).always_valid_p[:, -1] < ALPHA).mean()
        print(f"| {looks} | {fixed:.3f} | {valid:.3f} | {power_fixed:.3f} | {power_valid:.3f} |", flush=True)


def ope_table(seeds: int, users: int) -> None:
    print(f"\n#### Off-policy evaluation: 95 % CI coverage of the candidate's true click rate ({seeds} seeds; each a new "
          f"world of {users:,} users x 300 items and new A/B traffic, 10-item slates)\n")
    print("| logging | estimator | coverage | mean CI width | mean |estimate - truth| | mean ESS | support warning |")
    print("|---|---|---:|---:|---:|---:|---:|")
    scenarios = [("2 exploration slots over the whole catalogue", {}, seeds),
                 ("2 exploration slots over the next 30 items only (missing support)", {"explore_pool": 30},
                  max(seeds // 2, 5)),
                 ("deterministic (no exploration)", {"explore_slots": 0}, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, change, n in scenarios:
            rows = {"ips": [], "snips": [], "dr": []}
            ess, warned, impossible = [], 0, 0
            for seed in range(n):
                world = make_world(replace(WorldConfig(n_users=users, lift=0.05), **change), seed=1000 + seed)
                candidate = save_policy(world, "B", Path(tmp) / f"policy-{label[:3]}-{seed}")
                target = truth(world)["B_topk"]
                report = analyse_ope(write_logs(Path(tmp) / f"logs-{label[:3]}-{seed}", world, "ab", seed=seed), candidate)
                if not report.ope["possible"]:
                    impossible += 1
                    continue
                warned += any(w.code == "OPE_SUPPORT" for w in report.warnings)
                ess.append(report.ope["effective_sample_size"])
                for key in rows:
                    e = report.ope[key]
                    rows[key].append((e["ci_low"] <= target <= e["ci_high"], e["ci_high"] - e["ci_low"],
                                      abs(e["estimate"] - target)))
            if impossible:
                print(f"| {label} | all | — (OPE impossible reported in {impossible}/{n}) | — | — | — | — |", flush=True)
                continue
            for key, values in rows.items():
                cover, width, err = (np.array(v, float) for v in zip(*values))
                print(f"| {label} | {key.upper()} | {cover.mean():.2f} | {width.mean():.4f} | {err.mean():.4f} | "
                      f"{np.mean(ess):,.0f} | {warned}/{n} |", flush=True)


def sensitivity_table(seeds: int, users: int, lifts: list[float]) -> None:
    print(f"\n#### Interleaving vs A/B: users needed for 80 % power at alpha {ALPHA} (same simulated users, "
          f"{seeds} worlds of {users:,} users per row; median)\n")
    print("| true CTR lift of B | A/B test (both arms) | team-draft interleaving | ratio (A/B / interleaving) | "
          "ratio range over worlds |")
    print("|---:|---:|---:|---:|---|")
    for lift in lifts:
        results = [sensitivity(make_world(WorldConfig(n_users=users, lift=lift), seed=2000 + s), seed=s) for s in range(seeds)]
        ratios = [r.ratio for r in results]
        print(f"| {np.median([r.true_lift for r in results]):+.1%} | {np.median([r.ab_users for r in results]):,.0f} | "
              f"{np.median([r.interleaving_users for r in results]):,.0f} | {np.median(ratios):.1f}x | "
              f"{min(ratios):.1f}x - {max(ratios):.1f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2_000, help="users per peeking experiment")
    parser.add_argument("--reps", type=int, default=2_000, help="A/A experiments per peeking row")
    parser.add_argument("--looks", type=int, nargs="+", default=[1, 5, 14, 30])
    parser.add_argument("--lift", type=float, default=0.1, help="planted lift for the peeking power columns")
    parser.add_argument("--power-users", type=int, default=20_000, help="users per planted-lift experiment")
    parser.add_argument("--ope-seeds", type=int, default=40)
    parser.add_argument("--ope-users", type=int, default=1_500)
    parser.add_argument("--sens-seeds", type=int, default=3)
    parser.add_argument("--sens-users", type=int, default=10_000)
    parser.add_argument("--sens-lifts", type=float, nargs="+", default=[0.03, 0.05, 0.10])
    args = parser.parse_args()
    started = time.time()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    peeking_table(args.users, args.reps, args.looks, args.lift, args.power_users)
    ope_table(args.ope_seeds, args.ope_users)
    sensitivity_table(args.sens_seeds, args.sens_users, args.sens_lifts)
    print(f"\ntotal {time.time() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
