"""A/B assignment and interleaving: which model variant a user sees, decided by a hash so it never flips.

`hash(salt:user_id)` maps each user to a point in [0, 1); the variants own consecutive slices of
that interval in proportion to their weights. Same salt, same weights -> same assignment on
every server and after every restart; a new salt reshuffles users for a new experiment.

In "interleave" mode nobody is split: every feed is a team draft of both variants' rankings
(`recsys.interleaving.team_draft`, seeded per request so a replay gives the same slate), and the
exposure log records the team of each shown item. The manifest `experiment.json` is the
contract read by the A/B report; keys an operator added by hand (`guardrails`,
`catalogue_size`, `target_lift`) survive a restart.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys.interleaving import team_draft
from serving.exposure_log import EXPOSURES, JsonlLog, exposure_record
from serving.responses import dumps, loads

Mode = Literal["ab", "interleave"]
INTERLEAVED = "interleaved"  # the exposure log's variant for team-draft slates
_KEPT_KEYS = ("guardrails", "catalogue_size", "target_lift")


@dataclass(frozen=True)
class Experiment:
    """Deterministic user -> variant assignment (mode "ab") or per-request interleaving (mode "interleave").

    Example::

        Experiment("feed-ab", "salt-1", {"A": 0.5, "B": 0.5}).assign("42")  # 'A' or 'B', forever
    """

    name: str
    salt: str
    weights: dict[str, float]
    mode: Mode = "ab"

    def __post_init__(self) -> None:
        assert self.weights and all(w >= 0 for w in self.weights.values()), f"bad variant weights {self.weights}"
        assert sum(self.weights.values()) > 0, "variant weights must not all be zero"
        if self.mode not in ("ab", "interleave"):
            raise ValueError(f"experiment mode must be 'ab' or 'interleave', got {self.mode!r}")
        if self.mode == "interleave" and len(self.weights) != 2:
            raise ValueError(f"interleaving needs exactly two variants (a second run), got {list(self.weights)}")
        total = sum(self.weights.values())
        edges, running = [], 0.0
        for variant, weight in self.weights.items():
            running += weight / total
            edges.append((running, variant))
        object.__setattr__(self, "_edges", tuple(edges))

    def bucket(self, user_id: str) -> float:
        """The user's fixed point in [0, 1)."""
        digest = hashlib.blake2b(f"{self.salt}:{user_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64

    def assign(self, user_id: str) -> str:
        point = self.bucket(user_id)
        for edge, variant in self._edges:  # type: ignore[attr-defined]
            if point < edge:
                return variant
        return self._edges[-1][1]  # type: ignore[attr-defined]

    def interleave(self, user_id: str, request_id: str, ranked: dict[str, list[str]], k: int) -> tuple[list[str], list[str]]:
        """Team draft of the two variants' ranked item ids for one request: (items, team of each)."""
        first, second = list(self.weights)
        rng = random.Random(f"{self.salt}:{user_id}:{request_id}")
        return team_draft(ranked[first], ranked[second], k, rng, teams=(first, second))

    def write_manifest(self, log_dir: Path) -> Path:
        """Write `experiment.json`; keep the original start_ts while name, weights and mode are unchanged."""
        import fcntl  # noqa: PLC0415

        log_dir.mkdir(parents=True, exist_ok=True)
        # The workers of `recsys serve --workers N` all write it at start: one at a time, so the
        # later ones keep the first one's start_ts, each through its own temporary file.
        with open(log_dir / "experiment.json.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._write_manifest(log_dir)

    def _write_manifest(self, log_dir: Path) -> Path:
        path = log_dir / "experiment.json"
        start_ts = time.time()
        kept: dict = {}
        if path.exists():
            try:
                old = json.loads(path.read_text())
                kept = {k: old[k] for k in _KEPT_KEYS if k in old}
                if old.get("name") == self.name and old.get("variants") == self.weights and \
                        old.get("mode", "ab") == self.mode:
                    start_ts = float(old["start_ts"])
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        tmp = path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"name": self.name, "variants": self.weights, "start_ts": start_ts, "mode": self.mode,
                                   **kept}, indent=2))
        tmp.replace(path)
        return path


# One variant's answer: the JSON body the feed would return for that variant alone.
RankVariant = Callable[[str], Awaitable[bytes]]


async def interleaved_feed(experiment: Experiment, logs: JsonlLog, user_id: str, k: int, rank: RankVariant) -> bytes:
    """The serving hook of interleave mode: rank with both variants, team-draft the two lists, log the
    slate with each item's team, and answer with the interleaved items (each keeps its own score)."""
    started = time.perf_counter()
    bodies = {variant: loads(await rank(variant)) for variant in experiment.weights}
    request_id = uuid.uuid4().hex
    items, teams = experiment.interleave(user_id, request_id, {v: [i["item_id"] for i in b["items"]]
                                                              for v, b in bodies.items()}, k)
    payload = {v: {i["item_id"]: i for i in b["items"]} for v, b in bodies.items()}
    versions = "+".join(b["model_version"] for b in bodies.values())
    logs.write(EXPOSURES, exposure_record(request_id, time.time(), user_id, INTERLEAVED, versions, items, teams=teams,
                                          latency_ms=round(1000 * (time.perf_counter() - started), 3)))
    return dumps({"items": [payload[t][i] for i, t in zip(items, teams)], "model_version": versions,
                  "variant": INTERLEAVED, "cold_start": any(b["cold_start"] for b in bodies.values())})
