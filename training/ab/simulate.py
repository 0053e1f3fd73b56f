"""Simulated online experiments with a planted effect: the ground truth the A/B statistics are
tested against, and realistic logs for demos (`python -m training.ab.simulate OUT_DIR`).

Users differ the way real users do, because that heterogeneity is what breaks naive statistics:
activity is Gamma-distributed (a few heavy users see most exposures) and click propensity is
Beta-distributed per user, so clicks are correlated within a user. The treatment multiplies the
per-exposure click probability by (1 + lift); pre-period behaviour comes from the same latent
propensity, so CUPED has something to exploit. The same draw feeds both the vectorised per-user
arrays (hundreds of experiments at once) and the JSON Lines logs, so the two cannot drift apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

DAY = 86_400.0


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated experiment. Lifts are relative (0.1 = +10 %) and keyed by variant name.

    `lost_treatment_share` plants a sample-ratio mismatch the way it happens in production: the
    logs of that share of non-control users never arrive (e.g. a client crash in the treatment).
    """

    n_users: int = 20_000
    weights: dict[str, float] = field(default_factory=lambda: {"A": 0.5, "B": 0.5})
    ctr_lift: dict[str, float] = field(default_factory=lambda: {"B": 0.10})
    conversion_lift: dict[str, float] = field(default_factory=dict)
    base_ctr: float = 0.05
    ctr_concentration: float = 20.0
    mean_exposures: float = 8.0
    activity_shape: float = 1.2
    click_to_conversion: float = 0.1
    days: float = 14.0
    pre_days: float = 14.0
    slate_size: int = 10
    n_items: int = 5_000
    organic_clicks_per_user: float = 0.5
    other_events_per_user: float = 2.0
    lost_treatment_share: float = 0.0
    start_ts: float = 1_700_000_000.0
    name: str = "simulated-experiment"


@dataclass(frozen=True)
class UserDraw:
    """Per-user counts over the experiment window (and the pre-period), any array shape."""

    exposures: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    pre_clicks: np.ndarray
    pre_conversions: np.ndarray


def _latent(rng: np.random.Generator, size: tuple[int, ...], cfg: SimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    rate = rng.gamma(cfg.activity_shape, (cfg.mean_exposures - 1) / cfg.activity_shape, size)
    a = cfg.base_ctr * cfg.ctr_concentration
    propensity = rng.beta(a, cfg.ctr_concentration - a, size)
    return rate, propensity


def draw_users(rng: np.random.Generator, size: int | tuple[int, ...], cfg: SimulationConfig,
               variant: str) -> UserDraw:
    """Draw users of one variant; every exposed user has at least one exposure."""
    size = (size,) if isinstance(size, int) else tuple(size)
    rate, propensity = _latent(rng, size, cfg)
    p_click = np.minimum(propensity * (1 + cfg.ctr_lift.get(variant, 0.0)), 1.0)
    p_conv = min(cfg.click_to_conversion * (1 + cfg.conversion_lift.get(variant, 0.0)), 1.0)
    exposures = 1 + rng.poisson(rate)
    clicks = rng.binomial(exposures, p_click)
    pre_exposures = rng.poisson(rate * cfg.pre_days / cfg.days)
    pre_clicks = rng.binomial(pre_exposures, propensity)
    return UserDraw(exposures, clicks, rng.binomial(clicks, p_conv), pre_clicks,
                    rng.binomial(pre_clicks, cfg.click_to_conversion))


def arm_sizes(cfg: SimulationConfig) -> dict[str, int]:
    """Fixed users per arm for vectorised studies (complete randomisation with exact shares)."""
    total = sum(cfg.weights.values())
    return {v: int(round(cfg.n_users * w / total)) for v, w in cfg.weights.items()}


def simulate_arms(cfg: SimulationConfig, reps: int, seed: int = 0) -> dict[str, UserDraw]:
    """`reps` independent experiments at once: arrays of shape (reps, users in arm) per variant."""
    rng = np.random.default_rng(seed)
    return {v: draw_users(rng, (reps, n), cfg, v) for v, n in arm_sizes(cfg).items()}


def simulate_daily_cuts(cfg: SimulationConfig, reps: int, looks: int, seed: int = 0):
    """`reps` experiments inspected at `looks` evenly spaced cuts: yields, per look, cumulative per-user
    (clicks, exposures) of shape (reps, users in arm) per variant.

    Every user arrives at the start with one exposure (as in `draw_users`); the remaining
    exposures spread evenly over the looks. The same latent users persist across looks, so the
    looks are as correlated as the daily cuts of a real experiment.
    """
    rng = np.random.default_rng(seed)
    arms = {}
    for variant, n in arm_sizes(cfg).items():
        rate, propensity = _latent(rng, (reps, n), cfg)
        p_click = np.minimum(propensity * (1 + cfg.ctr_lift.get(variant, 0.0)), 1.0)
        arms[variant] = [rate, p_click, np.zeros((reps, n)), np.zeros((reps, n))]
    for look in range(looks):
        out = {}
        for variant, state in arms.items():
            rate, p_click, clicks, exposures = state
            new = rng.poisson(rate / looks) + (1 if look == 0 else 0)
            exposures += new
            clicks += rng.binomial(new, p_click)
            out[variant] = (clicks.copy(), exposures.copy())
        yield out


def true_metrics(cfg: SimulationConfig, n: int = 400_000, seed: int = 12_345) -> dict[str, dict[str, float]]:
    """Population CTR and user conversion rate per variant, the values a CI should cover.

    Inner expectations are exact (E[clicks] = n p, P(convert) = 1 - (1 - p q)^n); only the latent
    user mix is Monte Carlo, so the truth is accurate to ~1e-4.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for variant in cfg.weights:
        rate, propensity = _latent(rng, (n,), cfg)
        exposures = 1 + rng.poisson(rate)
        p_click = np.minimum(propensity * (1 + cfg.ctr_lift.get(variant, 0.0)), 1.0)
        p_conv = min(cfg.click_to_conversion * (1 + cfg.conversion_lift.get(variant, 0.0)), 1.0)
        out[variant] = {"ctr": float((exposures * p_click).sum() / exposures.sum()),
                        "conversion_rate": float(1 - ((1 - p_click * p_conv) ** exposures).mean())}
    return out


def _rank_in_group(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each group laid out contiguously (vectorised 'row number within user')."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(counts.sum()) - starts


def _ids(prefix: str, values: np.ndarray) -> pl.Series:
    """Readable string ids ("u42", "i7") for integer codes, built column-wise in polars."""
    codes = pl.Series("v", np.asarray(values, np.int64))
    return codes.to_frame().select(pl.concat_str(pl.lit(prefix), pl.col("v").cast(pl.String))).to_series()


def write_logs(out_dir: Path, cfg: SimulationConfig = SimulationConfig(), seed: int = 0) -> Path:
    """Write exposures.jsonl, events.jsonl and experiment.json for one simulated experiment."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(cfg.weights)
    w = np.array([cfg.weights[v] for v in names], float)
    assignment = rng.choice(len(names), size=cfg.n_users, p=w / w.sum())
    draws = [draw_users(rng, int((assignment == k).sum()), cfg, v) for k, v in enumerate(names)]
    variant_idx = np.concatenate([np.full(len(d.exposures), k) for k, d in enumerate(draws)])
    counts = {f: np.concatenate([getattr(d, f) for d in draws]) for f in UserDraw.__dataclass_fields__}
    kept = (variant_idx == 0) | (rng.random(len(variant_idx)) >= cfg.lost_treatment_share)
    variant_idx = variant_idx[kept]
    counts = {f: c[kept] for f, c in counts.items()}
    n = len(variant_idx)
    user_ids = rng.permutation(cfg.n_users * 2)[:n]  # ids carry no hint of the variant
    end = cfg.start_ts + cfg.days * DAY

    n_exp = counts["exposures"]
    exp_user = np.repeat(np.arange(n), n_exp)
    exp_ts = cfg.start_ts + rng.random(len(exp_user)) * cfg.days * DAY
    # A slate is a run of distinct items starting at a popularity-skewed anchor.
    anchor = (cfg.n_items * rng.random(len(exp_user)) ** 3).astype(np.int64)
    items = (anchor[:, None] + np.arange(cfg.slate_size)) % cfg.n_items
    exposures = pl.DataFrame({
        "exposure_id": _ids("x", np.arange(len(exp_user))),
        "ts": exp_ts,
        "user_id": _ids("u", user_ids[exp_user]),
        "variant": pl.Series(np.array(names)[variant_idx[exp_user]]),
        "model_version": pl.Series(np.array([f"two-tower-{v.lower()}-v1" for v in names])[variant_idx[exp_user]]),
        "items": pl.Series(items).cast(pl.List(pl.Int64)).list.eval(pl.format("i{}", pl.element())),
    }).sort("ts")

    # Clicks land on a random item of a random exposure of the same user, minutes later.
    n_click = counts["clicks"]
    click_user = np.repeat(np.arange(n), n_click)
    exp_offset = np.cumsum(n_exp) - n_exp
    click_row = exp_offset[click_user] + (rng.random(len(click_user)) * n_exp[click_user]).astype(np.int64)
    click_item = items[click_row, rng.integers(0, cfg.slate_size, len(click_row))]
    click_ts = exp_ts[click_row] + rng.exponential(90.0, len(click_row))
    # Conversions follow the user's first `conversions` clicks (clicks are in random order).
    conv_rows = (np.cumsum(n_click) - n_click)[np.repeat(np.arange(n), counts["conversions"])] \
        + _rank_in_group(counts["conversions"])
    frames = [
        _events(user_ids[click_user], click_item, click_ts, "click"),
        _events(user_ids[click_user[conv_rows]], click_item[conv_rows], click_ts[conv_rows]
                + rng.exponential(600.0, len(conv_rows)), "conversion"),
    ]
    # Pre-period behaviour (before the experiment starts) from the same latent propensity.
    for kind, per_user in (("click", counts["pre_clicks"]), ("conversion", counts["pre_conversions"])):
        u = np.repeat(np.arange(n), per_user)
        frames.append(_events(user_ids[u], rng.integers(0, cfg.n_items, len(u)),
                              cfg.start_ts - rng.random(len(u)) * cfg.pre_days * DAY, kind))
    # Noise the analysis must ignore: organic clicks on never-recommended items, other event types,
    # and activity of users outside the experiment.
    organic = np.repeat(np.arange(n), rng.poisson(cfg.organic_clicks_per_user, n))
    frames.append(_events(user_ids[organic], cfg.n_items + rng.integers(0, cfg.n_items, len(organic)),
                          cfg.start_ts + rng.random(len(organic)) * (end - cfg.start_ts), "click"))
    other = np.repeat(np.arange(n), rng.poisson(cfg.other_events_per_user, n))
    frames.append(_events(user_ids[other], rng.integers(0, cfg.n_items, len(other)),
                          cfg.start_ts + rng.random(len(other)) * (end - cfg.start_ts),
                          rng.choice(np.array(["view", "add_to_cart"]), len(other))))
    outsiders = np.setdiff1d(np.arange(cfg.n_users * 2), user_ids)[: max(1, n // 20)]
    frames.append(_events(outsiders, rng.integers(0, cfg.n_items, len(outsiders)),
                          cfg.start_ts + rng.random(len(outsiders)) * (end - cfg.start_ts), "click"))
    events = pl.concat(frames).sort("ts")
    events = events.with_columns(event_id=_ids("e", np.arange(events.height))).select(
        "event_id", "ts", "user_id", "item_id", "event_type")

    exposures.write_ndjson(out_dir / "exposures.jsonl")
    events.write_ndjson(out_dir / "events.jsonl")
    (out_dir / "experiment.json").write_text(json.dumps(
        {"name": cfg.name, "variants": cfg.weights, "start_ts": cfg.start_ts}, indent=2))
    return out_dir


def _events(users: np.ndarray, items: np.ndarray, ts: np.ndarray, kind: str | np.ndarray) -> pl.DataFrame:
    kinds = pl.Series(np.broadcast_to(np.asarray(kind), (len(users),)).astype(str))
    return pl.DataFrame({"ts": np.asarray(ts, float), "user_id": _ids("u", users),
                         "item_id": _ids("i", items), "event_type": kinds})


if __name__ == "__main__":  # demo: python -m training.ab.simulate OUT_DIR [lift] [users]
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ab-demo")
    lift = float(sys.argv[2]) if len(sys.argv) > 2 else 0.10
    users = int(sys.argv[3]) if len(sys.argv) > 3 else 20_000
    print(write_logs(target, SimulationConfig(n_users=users, ctr_lift={"B": lift})))
