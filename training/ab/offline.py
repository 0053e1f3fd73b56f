"""Offline A/B: two training runs scored on the same test users, compared user by user.

Pairing by `user_id` is the point: the spread between users dwarfs the difference between two
models, and it cancels in per-user differences, so a paired analysis detects far smaller
improvements than comparing two averages. Breakdowns by user segment and by medium show *where*
a model gains (cold-start users, audio items, ...), which the headline mean hides.

User segments, by the user's number of train interactions (`n_train`):
new = 0-4 (cold start: too little history for a stable user embedding),
light = 5-49, heavy = 50 and more. Change them with `SegmentRule`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from statsmodels.stats.multitest import multipletests

from training.ab.decision import decide_report
from training.ab.errors import ReportInputError
from training.ab.results import Comparison, Interval, Report, VariantSummary
from training.ab.stats import ALPHA, PairedResult, paired_compare
from training.ab.validity import DEFAULT_TARGET_LIFT, paired_power

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20")
PRIMARY_METRIC = "ndcg@10"  # the decision line's goal metric


@dataclass(frozen=True)
class SegmentRule:
    """Thresholds on n_train: new < new_below <= light < heavy_from <= heavy."""

    new_below: int = 5
    heavy_from: int = 50

    def expr(self) -> pl.Expr:
        n = pl.col("n_train")
        return (pl.when(n < self.new_below).then(pl.lit(f"new users (n_train 0-{self.new_below - 1})"))
                .when(n < self.heavy_from).then(pl.lit(f"light users (n_train {self.new_below}-{self.heavy_from - 1})"))
                .otherwise(pl.lit(f"heavy users (n_train {self.heavy_from}+)")))


@dataclass(frozen=True)
class OfflineConfig:
    """Analysis choices; the seed makes the bootstrap (and so the report) reproducible."""

    alpha: float = ALPHA
    n_resamples: int = 2000
    seed: int = 0
    segments: SegmentRule = field(default_factory=SegmentRule)
    min_segment_users: int = 20
    target_lift: float = DEFAULT_TARGET_LIFT


def load_per_user(run_dir: Path, split: str) -> pl.DataFrame:
    """Per-user metrics of one run, via the evaluation package's contract.

    The only place that touches `training.evaluation`, so a change of that contract is fixed here.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(f"run directory not found: {run_dir}")
    try:
        from training.evaluation import per_user_metrics
    except ImportError as err:
        raise ReportInputError("offline A/B needs training.evaluation.per_user_metrics, which is not available "
                               f"({err})") from None
    try:
        frame = per_user_metrics(run_dir, split)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise ReportInputError(f"cannot evaluate {run_dir} on split {split!r}: {err}") from None
    if not isinstance(frame, pl.DataFrame) or "user_id" not in frame.columns:
        raise ReportInputError(f"per_user_metrics({run_dir}, {split!r}) did not return a polars frame with a user_id column")
    return frame


@dataclass(frozen=True)
class RunIdentity:
    """What a run was trained and evaluated on, from its run.json (and config.toml for older runs).

    Two runs are comparable user by user only when all three agree: user ids of different
    datasets, data versions or splits are different people or different held-out sets, and
    pairing them gives confident nonsense.
    """

    dataset: str
    data_version: str | None
    split_strategy: str | None
    model_version: str | None


def run_identity(run_dir: Path) -> RunIdentity:
    """Read the identity fields of a run directory (raises ReportInputError naming the file)."""
    import tomllib

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(f"run directory not found: {run_dir}")
    meta_path = run_dir / "run.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportInputError(f"{meta_path}: missing; not a run directory (recsys train writes it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportInputError(f"{meta_path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("dataset"), str):
        raise ReportInputError(f"{meta_path}: has no 'dataset' field; cannot tell what the run was trained on")
    strategy = meta.get("split_strategy")
    if strategy is None and (run_dir / "config.toml").is_file():
        try:
            strategy = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")).get("split_strategy")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            strategy = None
    return RunIdentity(meta["dataset"], meta.get("data_version"),
                       str(strategy).replace("_", "-") if strategy else None, meta.get("model_version"))


def check_comparable(run_a: Path, run_b: Path) -> tuple[RunIdentity, RunIdentity]:
    """Refuse runs whose users cannot be paired: different dataset, data version or split strategy."""
    a, b = run_identity(run_a), run_identity(run_b)
    for field_name, label in (("dataset", "datasets"), ("data_version", "data versions"),
                              ("split_strategy", "split strategies")):
        va, vb = getattr(a, field_name), getattr(b, field_name)
        if va != vb and va is not None and vb is not None:
            raise ReportInputError(f"runs are not comparable: their {label} differ (A {run_a}: {va!r}, B {run_b}: {vb!r}); "
                                   "users are paired by id, so both runs must be trained and evaluated on the same data")
        if va != vb:
            raise ReportInputError(f"runs are not comparable: {label} recorded for one run only (A: {va!r}, B: {vb!r}); "
                                   "retrain or evaluate both on the same data")
    return a, b


def analyse_runs(run_a: Path, run_b: Path, split: str, config: OfflineConfig = OfflineConfig()) -> Report:
    """Check both runs are comparable, load them and compare them (A = control, B = treatment)."""
    check_comparable(run_a, run_b)
    report = compare_frames(load_per_user(run_a, split), load_per_user(run_b, split), str(run_a), str(run_b), split,
                            config)
    if Path(run_a).resolve() == Path(run_b).resolve() and not any(w.code == "AA" for w in report.warnings):
        report.warn("AA", "info", f"A/A comparison: A and B are the same run directory ({run_a}).")
        decide_report(report, PRIMARY_METRIC)
    return report


def _pair(frame_a: pl.DataFrame, frame_b: pl.DataFrame, metrics: list[str], report: Report) -> pl.DataFrame:
    """Inner join on user_id; warn about users evaluated by one run only, drop incomplete pairs."""
    for name, frame in (("A", frame_a), ("B", frame_b)):
        dupes = frame.height - frame["user_id"].n_unique()
        if dupes:
            raise ReportInputError(f"run {name}: {dupes} duplicate user_id rows; per_user_metrics must return one row per user")
    keep = ["user_id", *[c for c in ("n_train", "media") if c in frame_a.columns]]
    a = frame_a.select(*keep, *[pl.col(m).cast(pl.Float64).alias(f"{m}|a") for m in metrics])
    b = frame_b.select("user_id", *[pl.col(m).cast(pl.Float64).alias(f"{m}|b") for m in metrics])
    paired = a.join(b, on="user_id", how="inner")
    only_a, only_b = frame_a.height - paired.height, frame_b.height - paired.height
    if only_a or only_b:
        report.warn("UNPAIRED", "warning", f"the runs were not evaluated on the same users: {only_a} only in A, "
                    f"{only_b} only in B; compared on the {paired.height} common users.")
    complete = paired.drop_nulls([f"{m}|{s}" for m in metrics for s in "ab"])
    if complete.height < paired.height:
        report.notes.append(f"{paired.height - complete.height} users with a missing metric value were left out.")
    if complete.height < 3:
        raise ReportInputError(f"only {complete.height} users are evaluated by both runs; need at least 3 to compare")
    return complete


def _rows(res: PairedResult, metrics: list[str], segment: str, method: str) -> list[Comparison]:
    return [Comparison(m, "A", "B", res.n, res.n, float(res.mean_control[i]), float(res.mean_treatment[i]),
                       float(res.diff[i]), float(res.ci_low[i]), float(res.ci_high[i]), float(res.rel_lift[i]),
                       float(res.rel_ci_low[i]), float(res.rel_ci_high[i]), float(res.p_value[i]), method, segment)
            for i, m in enumerate(metrics)]


def compare_frames(frame_a: pl.DataFrame, frame_b: pl.DataFrame, name_a: str, name_b: str, split: str,
                   config: OfflineConfig = OfflineConfig()) -> Report:
    """Paired comparison of two per-user metric frames (the contract of `per_user_metrics`)."""
    metrics = [m for m in METRICS if m in frame_a.columns and m in frame_b.columns]
    report = Report("offline", f"Offline A/B report — {Path(name_a).name} vs {Path(name_b).name} ({split})",
                    {"run_a": name_a, "run_b": name_b, "split": split, "control": "A", "n_resamples": config.n_resamples,
                     "seed": config.seed, "target_lift": config.target_lift,
                     "segments": {"new_below": config.segments.new_below, "heavy_from": config.segments.heavy_from}},
                    config.alpha, [], [])
    if not metrics:
        raise ReportInputError(f"no common metric columns; expected some of {', '.join(METRICS)}")
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        report.warn("MISSING_METRICS", "warning", f"metrics not produced by both runs, left out: {', '.join(missing)}")
    paired = _pair(frame_a, frame_b, metrics, report)
    a_cols, b_cols = [f"{m}|a" for m in metrics], [f"{m}|b" for m in metrics]
    identical = paired.select(a_cols).to_numpy().tolist() == paired.select(b_cols).to_numpy().tolist()
    if identical:
        report.warn("AA", "info", f"A/A comparison: both runs give identical metrics for all {paired.height:,} users "
                    "(the same run twice?). Every difference is exactly zero; there is nothing to test and no power "
                    "question to ask.")
    a_cols, b_cols = [f"{m}|a" for m in metrics], [f"{m}|b" for m in metrics]
    method = f"paired bootstrap CI ({config.n_resamples} resamples of users), paired t-test"

    def compare(frame: pl.DataFrame) -> PairedResult:
        return paired_compare(frame.select(a_cols).to_numpy(), frame.select(b_cols).to_numpy(),
                              config.n_resamples, config.alpha, config.seed)

    overall = compare(paired)
    report.comparisons = _rows(overall, metrics, "all", method)
    adjusted = multipletests([c.p_value for c in report.comparisons], alpha=config.alpha, method="holm")[1]
    weak = []
    for i, comp in enumerate(report.comparisons):
        comp.p_adjusted = float(adjusted[i])
        power = paired_power(float(overall.sd_diff[i]), overall.n, comp.control_value, config.alpha, config.target_lift)
        comp.mde, comp.mde_rel = power.mde, power.mde_rel
        if power.underpowered and not identical:
            weak.append(f"{comp.metric} ±{power.mde_rel:.1%} (needs ~{power.users_needed:,.0f} users)"
                        if np.isfinite(power.mde_rel) else f"{comp.metric} (no per-user variation: power unknown)")
    if weak:
        report.warn("UNDERPOWERED", "warning",
                    f"with {overall.n:,} paired users the minimum detectable relative effect "
                    f"(alpha {config.alpha}, "
                    f"power 0.8) exceeds the {config.target_lift:.0%} target for: {'; '.join(weak)}. "
                    "A non-significant difference on these metrics is not evidence of equal quality.")
    for role, name, means, ci in (("control", name_a, overall.mean_control, overall.control_ci),
                                  ("treatment", name_b, overall.mean_treatment, overall.treatment_ci)):
        report.variants.append(VariantSummary(
            "A" if role == "control" else "B", role, overall.n,
            {m: Interval(float(means[i]), float(ci[0][i]), float(ci[1][i])) for i, m in enumerate(metrics)},
            {"run_dir": name, "evaluated_users": (frame_a if role == "control" else frame_b).height}))
    report.segments = _segments(paired, metrics, config, compare, method, report)
    report.methods = _methods(config)
    decide_report(report, PRIMARY_METRIC)
    return report


def _segments(paired: pl.DataFrame, metrics: list[str], config: OfflineConfig, compare, method: str,
              report: Report) -> list[Comparison]:
    groups: list[tuple[str, pl.DataFrame]] = []
    if "n_train" in paired.columns:
        labelled = paired.with_columns(segment=config.segments.expr())
        order = {"new": 0, "light": 1, "heavy": 2}
        for label in sorted(labelled["segment"].unique().to_list(), key=lambda s: order[s.split()[0]]):
            groups.append((label, labelled.filter(pl.col("segment") == label)))
    else:
        report.notes.append("no n_train column: user-segment breakdown skipped.")
    if "media" in paired.columns:
        media = paired.with_columns(pl.col("media").cast(pl.String).fill_null("unknown"))
        for medium in sorted(media["media"].unique().to_list()):
            groups.append((f"media: {medium}", media.filter(pl.col("media") == medium)))
    else:
        report.notes.append("no media column: media breakdown skipped.")
    rows: list[Comparison] = []
    small = []
    for label, frame in groups:
        if frame.height < config.min_segment_users:
            small.append(f"{label} ({frame.height})")
            continue
        rows.extend(_rows(compare(frame), metrics, label, method))
    if small:
        report.notes.append(f"segments with fewer than {config.min_segment_users} users not analysed: {', '.join(small)}.")
    return rows


def _methods(config: OfflineConfig) -> list[str]:
    s = config.segments
    return [
        "Both runs are scored on the same test users; users are paired by user_id and only users evaluated by both count.",
        f"CIs: percentile bootstrap over users ({config.n_resamples} paired resamples, seed {config.seed}) of the mean "
        "per-user difference (and of the relative lift). p-values: paired t-test (scipy.stats.ttest_rel) on the per-user "
        "differences, i.e. a test of the same mean difference the CI describes.",
        "Verdicts use the raw p-value (consistent with the CI); Holm-adjusted p-values over the headline metrics are "
        "shown beside them for family-wise control. Segment rows are exploratory (unadjusted).",
        f"Segments by train interactions: new 0-{s.new_below - 1}, light {s.new_below}-{s.heavy_from - 1}, heavy "
        f"{s.heavy_from}+; media = dominant medium of the user's test items (unknown when missing).",
        f"Power: minimum detectable effect of the paired t-test at alpha {config.alpha}, power 0.8 (statsmodels TTestPower); "
        f"under-powered when above {config.target_lift:.0%} of the control mean.",
    ]
