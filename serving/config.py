"""Serving options, read once from the environment (prefix ``RECSYS_SERVE_``).

Kept apart from `recsys.config.Settings` (data dir, Redis URL, namespace) so the serving knobs
(index kind, cache TTL, experiment split) can change without touching what every job shares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


class ServingSettings(BaseSettings):
    """Everything `recsys serve` can be told; CLI flags override these fields.

    Example::

        RECSYS_SERVE_RUN_DIR=runs/tiktok RECSYS_SERVE_CACHE_TTL_S=60 recsys serve
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_SERVE_", env_file=".env", extra="ignore")

    run_dir: Path | None = None
    run_dir_b: Path | None = Field(default=None, description="second run directory: enables the A/B experiment")
    split_b: float = Field(default=0.5, ge=0.0, le=1.0, description="share of users assigned to variant B")
    experiment_name: str = "feed-ab"
    experiment_salt: str = Field(default="feed-ab-1", description="change it to reshuffle users between variants")
    log_dir: Path = Path("artifacts/serving")

    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = Field(default=None, description="when set, /admin/* needs header X-Admin-Token")

    default_k: int = 20
    max_k: int = 200
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=300, ge=1)
    lock_ttl_ms: int = Field(default=2000, ge=10, description="a stampede lock expires even if its holder dies")
    lock_wait_ms: int = Field(default=300, ge=0, description="how long a request waits for another's computation")
    event_id_ttl_s: int = Field(default=7 * 86400, ge=60, description="how long retried event ids are recognised")
    redis_timeout_s: float = Field(default=0.25, gt=0)
    redis_retry_after_s: float = Field(default=2.0, ge=0, description="pause before talking to a failed Redis again")

    index_kind: IndexKind = "auto"
    exact_max_items: int = Field(default=50_000, description="'auto': exact search up to this many items, IVF above")
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 96
    ivf_nlist: int | None = Field(default=None, description="default: 4 * sqrt(n_items)")
    ivf_nprobe: int = 32
    build_threads: int = 2

    cold_start_pool: int = Field(default=500, description="most popular items the cold-start list is picked from")
    mmr_lambda: float = Field(default=0.7, ge=0.0, le=1.0, description="1 = popularity only, 0 = diversity only")

    log_flush_ms: int = Field(default=50, ge=1)
    log_batch: int = Field(default=1024, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "ServingSettings":
        assert 1 <= self.default_k <= self.max_k, f"default_k must lie in 1..max_k, got {self.default_k}"
        return self

    @property
    def variant_weights(self) -> dict[str, float]:
        """Variant -> share of users; a single variant when no second run is configured."""
        if self.run_dir_b is None:
            return {"A": 1.0}
        return {"A": round(1.0 - self.split_b, 6), "B": round(self.split_b, 6)}
