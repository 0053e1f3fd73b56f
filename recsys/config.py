"""One typed place for settings read from the environment (and `.env`).

Everything that varies between a laptop, CI and production (where data lives, which Redis to
talk to, where runs are written) is read here once, so no module invents its own constant.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    # The repository sits beside ../shared/data on developer and CI machines.
    return (Path(__file__).resolve().parents[1].parent / "shared" / "data")


# How the served user tower runs request-sized batches, fastest first: each falls back to the next
# (`recsys.models.user_encoder.TowerUserEncoder`); "eager" is the module itself.
UserTowerRuntime = Literal["onnxruntime", "torchscript", "eager"]
RUNTIMES: tuple[str, ...] = get_args(UserTowerRuntime)


class Settings(BaseSettings):
    """Process-wide settings; env vars win (`RECSYS_DATA_DIR`, `REDIS_URL`, ...)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias="RECSYS_DATA_DIR")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    redis_cluster: bool = Field(default=False, validation_alias="RECSYS_REDIS_CLUSTER",
                                description="REDIS_URL names one node of a Redis Cluster (redis-py RedisCluster)")
    store_dir: Path = Field(default=Path("artifacts/store"), validation_alias="RECSYS_STORE_DIR")
    cache_dir: Path = Field(default=Path("artifacts/cache"), validation_alias="RECSYS_CACHE_DIR")
    served_events_dir: Path | None = Field(
        default=None, validation_alias="RECSYS_SERVE_EVENTS_DIR",
        description="offline store root the feed flushes accepted events to and `data.served_events` training reads "
                    "them from (default: <RECSYS_STORE_DIR>/offline): one setting, so the two cannot disagree")
    online_history_cap: int = Field(default=50, validation_alias="RECSYS_ONLINE_HISTORY_CAP")
    online_new_user_ttl_s: int = Field(default=30 * 86400, ge=1, validation_alias="RECSYS_ONLINE_NEW_USER_TTL_S",
                                       description="a new user's online history expires this long after their last event")
    redis_namespace: str = Field(default="recsys", validation_alias="RECSYS_REDIS_NAMESPACE")
    user_tower_runtime: UserTowerRuntime = Field(
        default="onnxruntime", validation_alias="RECSYS_USER_TOWER_RUNTIME",
        description="what runs the served user tower for a feed miss: an ONNX Runtime export of the trained module, "
                    "TorchScript traces of it, or the module eagerly (each checked against the module at load; "
                    "one that cannot be had falls back to the next, and /readyz reports the one in use)")

    def served_events_root(self, store_dir: Path | None = None) -> Path:
        """Where served events live: `served_events_dir`, else `<store_dir>/offline` (store_dir: this store's)."""
        return self.served_events_dir or (store_dir or self.store_dir) / "offline"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
