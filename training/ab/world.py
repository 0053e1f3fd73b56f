"""A simulated recommendation world with a known ground truth, for interleaving and off-policy tests.

`simulate` plants a lift in per-user click counts; that is enough for A/B statistics but has no
items, so it cannot say what a *different ranking* would have earned. Here users and items have
latent vectors and every (user, item) pair a true click probability

    p(u, i) = sigmoid(offset + a_u + <u, v_i> + b_i)   (a_u: how click-happy the user is, b_i: item popularity)

A policy is a two-tower model: its user and item vectors are the true ones plus embedding noise
(more noise, worse ranking), so it can be saved as a real run directory and scored by the same
code that scores a trained run. It serves the top `slate_size - explore_slots` items of its own
scores plus `explore_slots` items drawn uniformly from the rest of an exploration pool, so every
shown item has an exact propensity (1 for ranked slots, slots / pool size for explored ones).

Ground truth is exact: a policy's online value (CTR per shown item) is the activity-weighted mean
over users of its expected slate CTR, computed from `p` without sampling. Two policies with a
planted relative lift are made by calibrating the weaker one's noise (bisection).
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from recsys.interleaving import team_draft

DAY = 86_400.0


@dataclass(frozen=True)
class WorldConfig:
    """Size and behaviour of the simulated world; `lift` is B's relative CTR gain over A."""

    n_users: int = 4_000
    n_items: int = 300
    dim: int = 12
    slate_size: int = 10
    explore_slots: int = 2
    explore_pool: int | None = None  # None: uniform over the whole rest of the catalogue; N: the next N items of the ranking
    offset: float = -4.2
    item_bias_sd: float = 0.6
    user_bias_sd: float = 0.8
    affinity_scale: float = 1.0
    noise_b: float = 0.6
    lift: float = 0.05
    mean_exposures: float = 6.0
    activity_shape: float = 1.5
    days: float = 14.0
    new_item_share: float = 0.05  # the last items of the catalogue count as "new" (guardrail)
    start_ts: float = 1_700_000_000.0
    name: str = "simulated-world"
    guardrails: dict = field(default_factory=lambda: {"latency_p99_ms": {"max": 250.0}, "error_rate": {"max": 0.01},
                                                      "coverage": {"min": 0.05}, "new_item_share": {"min": 0.0}})


@dataclass
class Policy:
    """A ranking model: scores = user_vectors @ item_vectors.T (bias folded into the last dimension)."""

    name: str
    user_vectors: np.ndarray
    item_vectors: np.ndarray

    def ranked(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-`k` item indexes per user, best first."""
        scores = self.user_vectors[users] @ self.item_vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)


@dataclass
class World:
    """Users, items, true click probabilities, activity and the two policies A and B."""

    cfg: WorldConfig
    users: np.ndarray
    items: np.ndarray
    bias: np.ndarray
    user_bias: np.ndarray
    activity: np.ndarray
    policies: dict[str, Policy]
    _p_all: np.ndarray | None = field(default=None, repr=False)

    def click_prob(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """p(u, i) for users x items (all items when `items` is None; all pairs are cached when small)."""
        if items is None and self.cfg.n_users * self.cfg.n_items <= 20_000_000:
            if self._p_all is None:
                self._p_all = self.click_prob(np.arange(self.cfg.n_users), np.arange(self.cfg.n_items))
            return self._p_all[users]
        v = self.items if items is None else self.items[items]
        b = self.bias if items is None else self.bias[items]
        logit = self.cfg.offset + self.user_bias[users, None] + self.cfg.affinity_scale * (self.users[users] @ v.T) + b
        return 1.0 / (1.0 + np.exp(-logit))

    @property
    def user_ids(self) -> list[str]:
        return [f"u{u}" for u in range(self.cfg.n_users)]

    @property
    def item_ids(self) -> list[str]:
        return [f"i{i}" for i in range(self.cfg.n_items)]

    def slate_value(self, policy: Policy, users: np.ndarray | None = None, explore: bool = True) -> np.ndarray:
        """Expected CTR per shown item of `policy`'s slate for each user (exploration in expectation)."""
        users = np.arange(self.cfg.n_users) if users is None else users
        k, m = self.cfg.slate_size, self.cfg.explore_slots if explore else 0
        p = self.click_prob(users)
        ranked = policy.ranked(users, k - m)
        top = np.take_along_axis(p, ranked, axis=1).sum(1)
        if not m:
            return top / k
        if self.cfg.explore_pool is None:  # uniform over everything not ranked: no need to sort the rest
            explored = (p.sum(1) - top) / (self.cfg.n_items - (k - m)) * m
        else:
            explored = np.take_along_axis(p, _pool(policy, users, k - m, self.cfg), axis=1).mean(1) * m
        return (top + explored) / k

    def value(self, policy: Policy, explore: bool = True) -> float:
        """True online CTR per shown item: weighted by each user's expected slates (1 + activity, see `write_logs`)."""
        w = 1.0 + self.activity
        return float((self.slate_value(policy, explore=explore) * w).sum() / w.sum())


def _pool(policy: Policy, users: np.ndarray, ranked_slots: int, cfg: WorldConfig) -> np.ndarray:
    """Exploration pool per user: the next `explore_pool` items of the policy's ranking (or all the rest)."""
    if cfg.explore_pool is None:
        ranked = policy.ranked(users, ranked_slots)
        rest = np.ones((len(users), cfg.n_items), dtype=bool)
        np.put_along_axis(rest, ranked, False, axis=1)
        return np.nonzero(rest)[1].reshape(len(users), cfg.n_items - ranked_slots)
    return policy.ranked(users, ranked_slots + cfg.explore_pool)[:, ranked_slots:]


def _noisy(true_users: np.ndarray, true_items: np.ndarray, bias: np.ndarray, noise: float, rng: np.random.Generator,
           name: str) -> Policy:
    users = true_users + noise * rng.standard_normal(true_users.shape)
    items = true_items + noise * rng.standard_normal(true_items.shape)
    return Policy(name, np.hstack([users, np.ones((len(users), 1))]).astype(np.float32),
                  np.hstack([items, bias[:, None]]).astype(np.float32))


def make_world(cfg: WorldConfig = WorldConfig(), seed: int = 0) -> World:
    """Draw a world and two policies: B (noise `noise_b`) and A, calibrated so that value(B) = (1 + lift) value(A).

    A negative lift makes A the better one (the calibrated, noisier policy becomes B).
    """
    if cfg.lift < 0:
        if cfg.lift <= -1:
            raise ValueError(f"lift must be > -1 (a relative change of CTR), got {cfg.lift}")
        world = make_world(replace(cfg, lift=1 / (1 + cfg.lift) - 1), seed)
        a, b = world.policies["A"], world.policies["B"]
        a.name, b.name = "B", "A"
        world.policies = {"A": b, "B": a}
        return world
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(cfg.dim) * 1.6
    users = rng.standard_normal((cfg.n_users, cfg.dim)) * scale
    items = rng.standard_normal((cfg.n_items, cfg.dim)) * scale
    bias = rng.normal(0.0, cfg.item_bias_sd, cfg.n_items)
    activity = rng.gamma(cfg.activity_shape, cfg.mean_exposures / cfg.activity_shape, cfg.n_users)
    user_bias = rng.normal(0.0, cfg.user_bias_sd, cfg.n_users)
    world = World(cfg, users, items, bias, user_bias, activity, {})
    noise_seed = int(rng.integers(2**31))
    policy_b = _noisy(users, items, bias, cfg.noise_b, np.random.default_rng(noise_seed), "B")
    world.policies["B"] = policy_b
    if cfg.lift == 0:
        world.policies["A"] = Policy("A", policy_b.user_vectors.copy(), policy_b.item_vectors.copy())
        return world
    target = world.value(policy_b) / (1 + cfg.lift)
    a_seed = noise_seed + 1
    low, high = cfg.noise_b, cfg.noise_b * 8 + 4.0
    if world.value(_noisy(users, items, bias, high, np.random.default_rng(a_seed), "A")) > target:
        raise ValueError(f"lift {cfg.lift} is out of reach in this world (even a near-random A is too good)")
    for _ in range(22):  # same noise draw at every step: value(noise) is then (nearly) monotone
        mid = (low + high) / 2
        if world.value(_noisy(users, items, bias, mid, np.random.default_rng(a_seed), "A")) > target:
            low = mid
        else:
            high = mid
    world.policies["A"] = _noisy(users, items, bias, (low + high) / 2, np.random.default_rng(a_seed), "A")
    return world


def _exposure_counts(world: World, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1 + rng.poisson(world.activity[users])


def serve(world: World, policy: Policy, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One slate per entry of `users`: (items (n, k), propensities (n, k)) with exploration slots."""
    cfg = world.cfg
    k, m = cfg.slate_size, cfg.explore_slots
    ranked = policy.ranked(users, k - m)
    if not m:
        return ranked, np.ones(ranked.shape)
    pool = _pool(policy, users, k - m, cfg)
    picks = np.argsort(rng.random(pool.shape), axis=1)[:, :m]
    explored = np.take_along_axis(pool, picks, axis=1)
    props = np.hstack([np.ones((len(users), k - m)), np.full((len(users), m), m / pool.shape[1])])
    return np.hstack([ranked, explored]), props


def write_logs(out_dir: Path, world: World, mode: str = "ab", seed: int = 0) -> Path:
    """Serving-format logs of one experiment in `world`: exposures.jsonl, events.jsonl, experiment.json.

    mode "ab": each user is assigned A or B (50/50) and sees that policy's slates (with exploration
    and propensities). mode "interleave": every slate is a team draft of A's and B's rankings,
    with the contributing team of each item logged.
    """
    assert mode in ("ab", "interleave"), f"mode must be 'ab' or 'interleave', got {mode!r}"
    cfg = world.cfg
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    users = np.arange(cfg.n_users)
    counts = _exposure_counts(world, users, rng)
    exp_user = np.repeat(users, counts)
    n = len(exp_user)
    ts = cfg.start_ts + rng.random(n) * cfg.days * DAY
    variant = np.where(rng.random(cfg.n_users) < 0.5, "A", "B")[exp_user]
    k = cfg.slate_size
    if mode == "ab":
        slates = np.zeros((n, k), dtype=np.int64)
        props = np.ones((n, k))
        for name, policy in world.policies.items():
            rows = np.flatnonzero(variant == name)
            slates[rows], props[rows] = serve(world, policy, exp_user[rows], rng)
        teams = None
    else:
        variant = np.full(n, "interleaved")
        rank_a = world.policies["A"].ranked(users, k)
        rank_b = world.policies["B"].ranked(users, k)
        slates, teams = np.zeros((n, k), dtype=np.int64), np.empty((n, k), dtype=object)
        coin = random.Random(seed)
        for row, u in enumerate(exp_user):
            items, owner = team_draft(rank_a[u].tolist(), rank_b[u].tolist(), k, coin)
            slates[row], teams[row] = items, owner
        props = None
    p = np.vstack([np.take_along_axis(world.click_prob(exp_user[s:s + 20_000]), slates[s:s + 20_000], axis=1)
                   for s in range(0, n, 20_000)])
    clicked = rng.random(p.shape) < p
    new_from = int(cfg.n_items * (1 - cfg.new_item_share))
    latency = rng.lognormal(np.log(np.where(variant == "B", 60.0, 55.0)), 0.35)
    status = np.where(rng.random(n) < 0.002, 503, 200)
    order = np.argsort(ts)
    item_ids = np.array(world.item_ids)
    lines = []
    for row in order.tolist():
        failed = status[row] >= 500
        shown = [] if failed else item_ids[slates[row]].tolist()
        record = {"exposure_id": f"x{row}", "ts": float(ts[row]), "user_id": f"u{exp_user[row]}",
                  "variant": str(variant[row]), "model_version": f"world-{variant[row]}", "items": shown,
                  "latency_ms": round(float(latency[row]), 3), "status": int(status[row]),
                  "new_items": 0 if failed else int((slates[row] >= new_from).sum())}
        if props is not None:
            record["propensities"] = [] if failed else [round(float(x), 8) for x in props[row]]
        if teams is not None:
            record["teams"] = [] if failed else list(teams[row])
        lines.append(json.dumps(record, separators=(",", ":")))
    (out_dir / "exposures.jsonl").write_text("\n".join(lines) + "\n")
    ok = status < 500
    c_row, c_slot = np.nonzero(clicked & ok[:, None])
    click_ts = ts[c_row] + rng.exponential(90.0, len(c_row))
    convert = rng.random(len(c_row)) < 0.1
    events = pl.DataFrame({
        "ts": np.concatenate([click_ts, click_ts[convert] + rng.exponential(600.0, int(convert.sum()))]),
        "user_id": [f"u{u}" for u in np.concatenate([exp_user[c_row], exp_user[c_row][convert]])],
        "item_id": item_ids[np.concatenate([slates[c_row, c_slot], slates[c_row, c_slot][convert]])].tolist(),
        "event_type": ["click"] * len(c_row) + ["conversion"] * int(convert.sum()),
    }).sort("ts").with_row_index("n").select(
        pl.format("e{}", pl.col("n")).alias("event_id"), "ts", "user_id", "item_id", "event_type")
    events.write_ndjson(out_dir / "events.jsonl")
    spec = {"name": cfg.name, "variants": {"A": 0.5, "B": 0.5}, "start_ts": cfg.start_ts, "mode": mode,
            "catalogue_size": cfg.n_items, "guardrails": cfg.guardrails}
    (out_dir / "experiment.json").write_text(json.dumps(spec, indent=2))
    return out_dir


@dataclass(frozen=True)
class Sensitivity:
    """Users an A/B test and an interleaved test of the same pair need for 80 % power at alpha."""

    ab_users: float  # both arms together
    interleaving_users: float
    true_lift: float
    preference: float

    @property
    def ratio(self) -> float:
        return self.ab_users / self.interleaving_users


def per_user_ab(world: World, name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every world user served by policy `name` for their exposures: per-user (clicks, shown items)."""
    cfg = world.cfg
    users = np.arange(cfg.n_users)
    x = _exposure_counts(world, users, rng)
    k, m = cfg.slate_size, cfg.explore_slots
    p = world.click_prob(users)
    ranked = np.take_along_axis(p, world.policies[name].ranked(users, k - m), axis=1)
    clicks = rng.binomial(x[:, None], ranked).sum(1)
    if m:
        explored = (world.slate_value(world.policies[name], users) * k - ranked.sum(1)) / m
        clicks = clicks + rng.binomial(x * m, explored)
    return clicks.astype(float), (x * k).astype(float)


def per_user_interleaving(world: World, rng: np.random.Generator) -> np.ndarray:
    """Every world user shown team-draft slates of A and B: per-user score +1 (prefers B), -1, 0."""
    cfg = world.cfg
    users = np.arange(cfg.n_users)
    x = _exposure_counts(world, users, rng)
    k = cfg.slate_size
    rank_a, rank_b = world.policies["A"].ranked(users, k), world.policies["B"].ranked(users, k)
    coin = random.Random(int(rng.integers(2**31)))
    p = world.click_prob(users)
    score = np.zeros(cfg.n_users)
    for u in users.tolist():
        a_list, b_list = rank_a[u].tolist(), rank_b[u].tolist()
        credit_b = 0
        for _ in range(int(x[u])):
            items, owner = team_draft(a_list, b_list, k, coin)
            clicked = rng.random(len(items)) < p[u, items]
            credit_b += sum(1 if t == "B" else -1 for c, t in zip(clicked, owner) if c)
        score[u] = np.sign(credit_b)
    return score


def sensitivity(world: World, seed: int = 0, alpha: float = 0.05, power: float = 0.8) -> Sensitivity:
    """Users needed for `power` by each design, from per-user variances measured on the same simulated users.

    A/B: two arms, delta-method variance of CTR per arm (as the report computes it), the true
    difference of the two served policies. Interleaving: one-sample test of the per-user score.
    """
    from scipy import stats

    from training.ab.stats import linearise_ratio

    rng = np.random.default_rng(seed)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    variances = [linearise_ratio(*per_user_ab(world, name, rng))[1].var(ddof=1) for name in ("A", "B")]
    values = {name: world.value(world.policies[name]) for name in ("A", "B")}
    diff = values["B"] - values["A"]
    ab_users = 2 * z**2 * sum(variances) / diff**2 if diff else float("inf")
    scores = per_user_interleaving(world, rng)
    mean = float(scores.mean())
    il_users = z**2 * scores.var(ddof=1) / mean**2 if mean else float("inf")
    return Sensitivity(float(ab_users), float(il_users), values["B"] / values["A"] - 1, mean)


def truth(world: World) -> dict[str, float]:
    """True online CTR per shown item: each policy as served (with exploration) and as a pure top-k ranking."""
    out = {}
    for name, policy in world.policies.items():
        out[f"{name}_served"] = world.value(policy)
        out[f"{name}_topk"] = world.value(policy, explore=False)
    return out


def save_policy(world: World, name: str, run_dir: Path) -> Path:
    """Write policy `name` as a real run directory (recsys.artifact.save_run): the candidate for OPE."""
    from recsys.artifact import MeanPoolUserEncoder, save_run

    policy = world.policies[name]
    cfg = world.cfg
    items = pl.DataFrame({"item_id": world.item_ids, "item_index": np.arange(cfg.n_items, dtype=np.int32),
                          "media": ["text"] * cfg.n_items, "title": world.item_ids,
                          "popularity": np.zeros(cfg.n_items, dtype=np.int64)})
    users = pl.DataFrame({"user_id": world.user_ids, "user_index": np.arange(cfg.n_users, dtype=np.int32),
                          "n_train": np.zeros(cfg.n_users, dtype=np.int32)})
    version = f"{cfg.name}-{name}-{zlib.crc32(policy.item_vectors.tobytes()):08x}"
    return save_run(Path(run_dir), model_version=version, dataset=cfg.name, data_version="simulated",
                    config={"model": {"kind": "simulated_policy", "note": "latent-factor world, see training.ab.world"}},
                    items=items, users=users, item_vectors=policy.item_vectors, user_vectors=policy.user_vectors,
                    user_encoder_payload={"kind": MeanPoolUserEncoder.kind, "kwargs": {"half_life": 20.0}},
                    extra_meta={"simulated": True})
