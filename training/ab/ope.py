"""Off-policy evaluation: what click rate would a candidate run have earned on the logged traffic?

The logging policy records, for every shown item, the probability `q0(a|x)` that it would show
that item in that slate (1 for ranked slots, less for exploration slots). The candidate (a run
directory) serves its own top-k for the same user: `q(a|x) = 1` for its top-k items, else 0. The
value of a policy is the expected click rate per shown item,

    V(pi) = E_x [ 1/k sum_a q(a|x) r(x, a) ],

assuming an item's click does not depend on the other items of the slate (the usual
item-position-independence assumption of slate OPE). With w = q / q0 on each logged pair:

* IPS   = sum_i 1/k_i sum_{a in S_i} w r / n                   (unbiased when q0 > 0 wherever q > 0)
* SNIPS = sum_i 1/k_i sum w r / sum_i 1/k_i sum w             (self-normalised: less variance, tiny bias)
* DR    = sum_i 1/k_i [sum_a q r_hat + sum_{a in S_i} w (r - r_hat)] / n   (Dudik et al. 2011)

r_hat is a per-item click rate shrunk toward the global rate, cross-fitted over two halves of
the users (the model never scores the users it was fitted on). CIs: delta method on per-user
sums (a user's exposures are not independent), the same estimator the A/B report uses.
Effective sample size: (sum w)^2 / sum w^2.

Support: E[sum_{a in S} w] = sum over the candidate's items the logger can show, so
`support` = sum w / sum k estimates the share of the candidate's slate inside the logging
policy's support (1 when complete). Below 1, IPS and DR are biased low and SNIPS extrapolates:
the report warns. A deterministic logger (every propensity 1) has no support outside its own
slates: OPE is impossible and the report says so instead of printing numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from training.ab.decision import decide_report
from training.ab.errors import ReportInputError
from training.ab.logs import read_experiment
from training.ab.results import Report
from training.ab.stats import ALPHA, linearise_ratio

SUPPORT_WARN = 0.95
_SHRINK = 20.0  # pseudo-impressions of the global rate in the per-item reward model
_CHUNK = 2048


@dataclass(frozen=True)
class OpeConfig:
    alpha: float = ALPHA
    attribution_window_s: float = 86_400.0


def _ratio_ci(num: np.ndarray, den: np.ndarray, alpha: float) -> dict[str, float]:
    """sum(num) / sum(den) over users with a delta-method CI."""
    value, lin = linearise_ratio(num, den)
    se = float(lin.std(ddof=1) / np.sqrt(len(lin))) if len(lin) > 1 else float("nan")
    z = float(stats.norm.ppf(1 - alpha / 2))
    return {"estimate": float(value), "ci_low": float(value) - z * se, "ci_high": float(value) + z * se, "se": se}


def candidate_ranks(run_dir: Path, user_ids: list[str], depth: int) -> tuple[pl.DataFrame, str, int]:
    """(user_id, item_id, cand_rank) for the candidate's top-`depth` per user; its version; unknown users."""
    from recsys.artifact import RunDirError, load_run

    try:
        run = load_run(run_dir)
    except RunDirError as err:
        raise ReportInputError(f"--policy: {err}") from None
    index = run.user_index_by_id
    known = [u for u in user_ids if u in index]
    item_ids = np.array(run.items.sort("item_index")["item_id"].cast(pl.String).to_list())
    depth = min(depth, len(item_ids))
    frames = []
    for start in range(0, len(known), _CHUNK):
        chunk = known[start:start + _CHUNK]
        scores = run.user_vectors[[index[u] for u in chunk]] @ run.item_vectors.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        frames.append(pl.DataFrame({"user_id": np.repeat(chunk, depth), "item_id": item_ids[top.ravel()],
                                    "cand_rank": np.tile(np.arange(depth), len(chunk))}))
    ranks = pl.concat(frames) if frames else pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String,
                                                                  "cand_rank": pl.Int64})
    return ranks, run.model_version, len(user_ids) - len(known)


def _labels(exposures: pl.DataFrame, events: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """(exposure_id, item_id, propensity, k, clicked) for every logged (slate, item) pair."""
    pairs = (exposures.select("exposure_id", "user_id", "ts", pl.col("items").list.len().alias("k"),
                              pl.col("items").alias("item_id"), pl.col("propensities").alias("propensity"))
             .explode("item_id", "propensity"))
    clicks = events.filter(pl.col("event_type") == "click").select("user_id", "item_id", "ts").sort("ts")
    shown = pairs.select("user_id", "item_id", "ts", "exposure_id").sort("ts")
    credited = (clicks.join_asof(shown, on="ts", by=["user_id", "item_id"], strategy="backward", tolerance=window_s,
                                 check_sortedness=False)
                .filter(pl.col("exposure_id").is_not_null()).select("exposure_id", "item_id").unique()
                .with_columns(clicked=pl.lit(1.0)))
    return (pairs.join(credited, on=["exposure_id", "item_id"], how="left")
            .with_columns(pl.col("clicked").fill_null(0.0)))


def _reward_model(pairs: pl.DataFrame) -> pl.DataFrame:
    """Cross-fitted per-item click rate: r_hat for fold f comes from the other fold's users."""
    fold = (pl.col("user_id").hash(7) % 2).alias("fold")
    pairs = pairs.with_columns(fold)
    out = []
    for f in (0, 1):
        train = pairs.filter(pl.col("fold") != f)
        rate = float(train["clicked"].mean()) if train.height else 0.0
        per_item = train.group_by("item_id").agg(c=pl.col("clicked").sum(), n=pl.len()).with_columns(
            r_hat=(pl.col("c") + _SHRINK * rate) / (pl.col("n") + _SHRINK), fold=pl.lit(f, pl.Int64), prior=pl.lit(rate))
        out.append(per_item.select("item_id", "fold", "r_hat", "prior"))
    return pl.concat(out)


def analyse_ope(log_dir: Path, policy_dir: Path, config: OpeConfig = OpeConfig()) -> Report:
    """IPS, SNIPS and DR estimates of the candidate run's click rate from logged traffic."""
    logs = read_experiment(log_dir)
    alpha = config.alpha
    report = Report("ope", f"Off-policy evaluation — {Path(policy_dir).name} on {Path(log_dir).name}",
                    {"experiment": str(log_dir), "policy": str(policy_dir),
                     "attribution_window_s": config.attribution_window_s}, alpha, [], [])
    exposures = (logs.exposures.unique("exposure_id", keep="first", maintain_order=True)
                 .filter((pl.col("status").is_null() | (pl.col("status") < 400)) & (pl.col("items").list.len() > 0)))
    events = logs.events.unique("event_id", keep="first", maintain_order=True)
    interleaved = exposures.filter(pl.col("teams").is_not_null()).height
    if interleaved:
        report.notes.append(f"{interleaved} interleaved exposures left out (their propensities are not logged).")
        exposures = exposures.filter(pl.col("teams").is_null())
    if exposures.is_empty():
        raise ReportInputError(f"{Path(log_dir) / 'exposures.jsonl'}: no served, non-interleaved exposures to evaluate")
    exposures = exposures.with_columns(
        pl.when(pl.col("propensities").is_null()).then(pl.col("items").list.eval(pl.lit(1.0)))
        .otherwise(pl.col("propensities")).alias("propensities"))
    pairs = _labels(exposures, events, config.attribution_window_s)
    logged_users = pairs.group_by("user_id").agg(c=pl.col("clicked").sum(), n=pl.len())
    logged = _ratio_ci(logged_users["c"].to_numpy().astype(float), logged_users["n"].to_numpy().astype(float), alpha)
    report.methods = _methods(alpha, config)
    if pairs.select((pl.col("propensity") >= 1.0).all()).item():
        reason = ("every logged propensity is 1: the logging policy ranked deterministically, so the logs say nothing "
                  "about items it never showed")
        report.ope = {"possible": False, "reason": reason, "metric": "ctr per shown item", "logged": logged,
                      "ips": None, "snips": None, "dr": None}
        report.warn("OPE_IMPOSSIBLE", "error", f"Off-policy evaluation is impossible for these logs: {reason}. Log "
                    "propensities from a randomised policy (exploration slots), or run an online test.")
        decide_report(report, "ctr")
        return report

    users = pairs["user_id"].unique().to_list()
    depth = int(pairs["k"].max())
    ranks, version, unknown = candidate_ranks(policy_dir, users, depth)
    if unknown:
        report.warn("OPE_UNKNOWN_USERS", "warning", f"{unknown:,} of {len(users):,} logged users are unknown to the "
                    "candidate run (no user vector) and are left out of every estimate.")
        pairs = pairs.join(ranks.select("user_id").unique(), on="user_id", how="semi")
    if pairs.is_empty():
        raise ReportInputError(f"--policy {policy_dir}: none of the logged users is known to this run; is it trained "
                               "on the same dataset as the serving logs?")
    pairs = (pairs.join(ranks, on=["user_id", "item_id"], how="left")
             .with_columns(w=pl.when(pl.col("cand_rank") < pl.col("k")).then(1.0 / pl.col("propensity")).otherwise(0.0),
                           inv_k=1.0 / pl.col("k"))
             .with_columns(fold=(pl.col("user_id").hash(7) % 2)))
    model = _reward_model(pairs)
    pairs = pairs.join(model.select("item_id", "fold", "r_hat"), on=["item_id", "fold"], how="left").join(
        model.select("fold", "prior").unique(), on="fold", how="left").with_columns(pl.col("r_hat").fill_null(pl.col("prior")))
    # Direct-method term: the reward model over the candidate's own top-k for each logged slate.
    slates = pairs.group_by("exposure_id").agg(pl.col("user_id", "k", "fold").first())
    cand = (ranks.join(slates, on="user_id", how="inner").filter(pl.col("cand_rank") < pl.col("k"))
            .join(model.select("item_id", "fold", "r_hat"), on=["item_id", "fold"], how="left")
            .join(model.select("fold", "prior").unique(), on="fold", how="left")
            .with_columns(pl.col("r_hat").fill_null(pl.col("prior")))
            .group_by("exposure_id").agg(dm=pl.col("r_hat").sum() / pl.col("k").first()))
    per_exposure = (pairs.group_by("exposure_id").agg(
        pl.col("user_id").first(), ips=(pl.col("w") * pl.col("clicked") * pl.col("inv_k")).sum(),
        wsum=(pl.col("w") * pl.col("inv_k")).sum(),
        corr=(pl.col("w") * (pl.col("clicked") - pl.col("r_hat")) * pl.col("inv_k")).sum())
        .join(cand, on="exposure_id", how="left").with_columns(pl.col("dm").fill_null(0.0)))
    per_user = per_exposure.group_by("user_id").agg(ips=pl.col("ips").sum(), wsum=pl.col("wsum").sum(),
                                                    dr=(pl.col("dm") + pl.col("corr")).sum(), n=pl.len())
    n = per_user["n"].to_numpy().astype(float)
    ips = _ratio_ci(per_user["ips"].to_numpy(), n, alpha)
    snips = _ratio_ci(per_user["ips"].to_numpy(), per_user["wsum"].to_numpy(), alpha)
    dr = _ratio_ci(per_user["dr"].to_numpy(), n, alpha)
    support = _ratio_ci(per_user["wsum"].to_numpy(), n, alpha)
    w = pairs["w"].to_numpy()
    ess = float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0
    report.ope = {"possible": True, "metric": "ctr per shown item", "candidate": version, "ips": ips, "snips": snips,
                  "dr": dr, "logged": logged, "support": support, "effective_sample_size": ess,
                  "logged_pairs": pairs.height, "exposures": per_exposure.height, "users": per_user.height,
                  "max_weight": float(w.max())}
    if support["ci_high"] < SUPPORT_WARN:
        report.warn("OPE_SUPPORT", "warning", f"missing support: only {support['estimate']:.0%} of the candidate's slate "
                    f"(95% CI {support['ci_low']:.0%} to {support['ci_high']:.0%}) falls on items the logging policy can "
                    "show (propensity > 0). IPS and DR are biased low and SNIPS extrapolates: widen exploration "
                    "before trusting these numbers.")
    if ess < 100:
        report.warn("OPE_ESS", "warning", f"effective sample size is {ess:.0f}: a few large weights dominate; the "
                    "intervals are unreliable.")
    decide_report(report, "ctr")
    return report


def _methods(alpha: float, config: OpeConfig) -> list[str]:
    return [
        "Value = click rate per shown item; a click counts for the (slate, item) it was shown in, at most "
        f"{config.attribution_window_s / 3600:g} h earlier. Candidate policy = the run's top-k by user . item score for "
        "the logged user, k = the logged slate size; weights w = 1[item in candidate top-k] / logged propensity.",
        "IPS, self-normalised IPS and doubly-robust (reward model: per-item click rate shrunk to the global rate, "
        f"cross-fitted over two user halves) estimates; {1 - alpha:.0%} CIs by the delta method on per-user sums.",
        "Effective sample size = (sum w)^2 / sum w^2. Support = sum w / sum k: the share of the candidate's slate the "
        f"logging policy can show; below {SUPPORT_WARN:.0%} (upper CI) the report warns.",
    ]


def ope_summary(report: Report) -> dict[str, Any]:
    """The estimates in the `ope` JSON contract (estimate, ci_low, ci_high per estimator)."""
    return {k: report.ope[k] for k in ("ips", "snips", "dr")} if report.ope else {}
