"""A/B assignment: which model variant a user sees, decided by a hash so it never flips.

`hash(salt:user_id)` maps each user to a point in [0, 1); the variants own consecutive slices of
that interval in proportion to their weights. Same salt, same weights -> same assignment on
every server and after every restart; a new salt reshuffles users for a new experiment.
The manifest `experiment.json` is the contract read by the A/B report.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Experiment:
    """Deterministic user -> variant assignment.

    Example::

        Experiment("feed-ab", "salt-1", {"A": 0.5, "B": 0.5}).assign("42")  # 'A' or 'B', forever
    """

    name: str
    salt: str
    weights: dict[str, float]

    def __post_init__(self) -> None:
        assert self.weights and all(w >= 0 for w in self.weights.values()), f"bad variant weights {self.weights}"
        assert sum(self.weights.values()) > 0, "variant weights must not all be zero"
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

    def write_manifest(self, log_dir: Path) -> Path:
        """Write `experiment.json`; keep the original start_ts while name and weights are unchanged."""
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "experiment.json"
        start_ts = time.time()
        if path.exists():
            try:
                old = json.loads(path.read_text())
                if old.get("name") == self.name and old.get("variants") == self.weights:
                    start_ts = float(old["start_ts"])
            except (ValueError, KeyError, TypeError):
                pass
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"name": self.name, "variants": self.weights, "start_ts": start_ts}, indent=2))
        tmp.replace(path)
        return path
