"""Serving options, read once from the environment (prefix ``RECSYS_SERVE_``).

Kept apart from `recsys.config.Settings` (data dir, Redis URL, namespace) so the serving knobs
(index kind, cache TTL, experiment split) can change without touching what every job shares.

Settings are read from the process environment and from a `.env` file in the working directory,
except the ones that open the server up (`DOTENV_REFUSED`): a stray `.env` (checked out with a
repository, left by another tool) must not be able to turn a locked-down server into an open one,
so those are refused there with a message naming the file.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recsys.new_items import NewItemPolicy

IndexKind = Literal["auto", "flat", "hnsw", "ivf", "ivf_sq8", "ivf_pq"]
_NEW = NewItemPolicy()  # defaults shared with the offline cold-start evaluation
API_MAX_K = 200  # the largest `k` the API documents (OpenAPI bounds are static)


DOTENV_REFUSED = frozenset({"allow_open_writes"})  # only the process environment or a flag may set these
MIN_KEY_LENGTH = 16
MIN_KEY_DISTINCT = 8  # "aaaaaaaaaaaaaaaa" is 16 characters and no secret
LOOPBACK_HOST_NAMES = ("localhost", "127.0.0.1", "::1", "testserver")  # testserver: Starlette's TestClient


class ServingConfigError(ValueError):
    """Settings that must not start a server (e.g. open writes on a public interface)."""


class _DotEnvWithoutOpeners(PydanticBaseSettingsSource):
    """The `.env` source, refusing the fields in `DOTENV_REFUSED` (a stray file must not open the server)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self.inner()
        refused = sorted(DOTENV_REFUSED & set(values))
        if refused:
            names = ", ".join(f"RECSYS_SERVE_{name.upper()}" for name in refused)
            raise ServingConfigError(f"{names} is set in a .env file ({Path('.env').resolve()}): it opens the server "
                                     "to anyone, so only the process environment may set it; remove it from .env")
        return values


class ServingSettings(BaseSettings):
    """Everything `recsys serve` can be told; CLI flags override these fields.

    Example::

        RECSYS_SERVE_RUN_DIR=runs/tiktok RECSYS_SERVE_CACHE_TTL_S=60 recsys serve
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_SERVE_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _DotEnvWithoutOpeners(settings_cls, dotenv_settings), file_secret_settings

    run_dir: Path | None = None
    run_dir_b: Path | None = Field(default=None, description="second run directory: enables the A/B experiment")
    split_b: float = Field(default=0.5, ge=0.0, le=1.0, description="share of users assigned to variant B")
    experiment_name: str = "feed-ab"
    experiment_salt: str = Field(default="feed-ab-1", description="change it to reshuffle users between variants")
    experiment_mode: Literal["ab", "interleave"] = Field(default="ab", description="interleave: every feed is a team "
                                                         "draft of both runs' rankings (needs run_dir_b)")
    log_dir: Path = Path("artifacts/serving")

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = Field(default=None, description="key for writes (POST /v1/events) and admin calls, "
                                      "sent as header X-API-Key; unset: dev mode (open, loopback only)")
    admin_token: SecretStr | None = Field(default=None, description="separate key for /admin/* (header X-Admin-Token "
                                          "or X-API-Key); unset: admin calls take api_key")
    read_key_required: bool = Field(default=False, description="reads (feeds, similar, search, explorer data) need "
                                    "a key too; needs api_key")
    allow_open_writes: bool = Field(default=False, description="without api_key, start even on a non-loopback host "
                                    "with writes and admin calls open to anyone (not for production)")
    page_key: bool = Field(default=False, description="the explorer page (/) gets a cookie bound to one new visitor "
                           "id: it may read and post events for that user only (rate-limited), nothing else")
    page_session_ttl_s: int = Field(default=12 * 3600, ge=60, description="how long a page cookie stays valid")
    page_events_per_minute: int = Field(default=30, ge=1, description="events one page cookie may post per minute "
                                        "(429 above)")
    allowed_hosts: list[str] | None = Field(default=None, description="Host header values accepted (JSON list, "
                                            "'*' = any); default: the loopback names when the server listens on "
                                            "loopback (DNS rebinding), any otherwise")
    runs_root: Path | None = Field(default=None, description="POST /admin/model only loads run directories under "
                                   "this folder; default: the parent folder of the run the server started with")
    model_load_timeout_s: float = Field(default=600.0, gt=0, description="a model switch whose run directory has "
                                        "not loaded by then is refused (a hung disk, a FIFO) and the old one serves on")
    max_event_skew_s: float = Field(default=300.0, ge=0, description="an event's ts may lie at most this far in the "
                                    "future (server clock); later ones are refused with 422")

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="request bodies above this get 413 "
                                "(except /v1/search uploads)")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="largest /v1/search or PUT /v1/items body (413)")

    default_k: int = 20
    fast_feed_route: bool = Field(default=True, description="answer well-formed GET /v1/users/{id}/recommendations "
                                  "without FastAPI's routing and validation (serving.api.fast_feed); the same "
                                  "code and responses, ~0.3 ms less CPU per request")
    max_k: int = Field(default=API_MAX_K, ge=1, le=API_MAX_K)
    workers: int = Field(default=1, ge=1, le=64, description="server processes (uvicorn workers); everything they "
                         "share lives in Redis and the offline store, each holds the model")
    worker_healthcheck_s: int = Field(default=120, ge=5, description="with workers > 1: a worker that does not "
                                      "answer the supervisor's ping this long is restarted (loading a large model "
                                      "holds the interpreter for tens of seconds)")
    catalogue_poll_ms: int = Field(default=100, ge=10, description="how often a server process applies catalogue "
                                   "writes made by other processes (other workers, `recsys items add`)")
    cache_enabled: bool = True
    cache_ttl_s: int = Field(default=300, ge=1)
    lock_ttl_ms: int = Field(default=2000, ge=10, description="a stampede lock expires even if its holder dies")
    lock_wait_ms: int = Field(default=300, ge=0, description="how long a request waits for another's computation")
    event_id_ttl_s: int = Field(default=7 * 86400, ge=60, description="how long retried event ids are recognised")
    redis_timeout_s: float = Field(default=0.25, gt=0)
    redis_retry_after_s: float = Field(default=2.0, ge=0, description="pause before talking to a failed Redis again")

    worker_dir: Path | None = Field(default=None, description="set by `recsys serve --workers N` for its workers: "
                                    "the folder where they announce model switches to each other and keep "
                                    "their metrics (PROMETHEUS_MULTIPROC_DIR)")

    index_kind: IndexKind = "auto"
    index_dir: Path | None = Field(default=None, description="where HNSW / IVF indexes are built once and "
                                   "memory-mapped from, shared by the server processes; default "
                                   "<RECSYS_CACHE_DIR>/index")
    exact_max_items: int = Field(default=50_000, description="'auto': IVF above this many items")
    exact_max_scan: int = Field(default=2_000_000, ge=0, description="'auto': exact search while items x dim is at "
                                "most this (one query's scan cost), HNSW above it up to exact_max_items")
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int | None = Field(default=None, ge=1, description="default: calibrated at build time to reach "
                                       "index_target_recall")
    ivf_nlist: int | None = Field(default=None, ge=1, description="default: 4 * sqrt(n_items), at most ivf_max_nlist")
    ivf_max_nlist: int = Field(default=4096, ge=1)
    ivf_nprobe: int | None = Field(default=None, ge=1, description="default: calibrated at build time to reach "
                                   "index_target_recall")
    index_target_recall: float = Field(default=0.95, gt=0.0, le=1.0, description="recall@20 against exact search the "
                                       "search knob (efSearch / nprobe) is calibrated to, on a sample of the run's users")
    index_memory_budget_mb: int | None = Field(default=None, ge=1, description="'auto' above exact_max_items: IVF with "
                                               "float32 lists, else 8-bit scalars, else PQ codes, the first that fits; "
                                               "default a quarter of the memory available at load")
    build_threads: int = 2

    cold_start_pool: int = Field(default=500, description="most popular items the cold-start list is picked from")
    mmr_lambda: float = Field(default=0.7, ge=0.0, le=1.0, description="1 = popularity only, 0 = diversity only")

    explore_share: float = Field(default=_NEW.share, ge=0.0, le=0.5, description="share of feed positions given to items "
                                 "added live within explore_window_s (drawn by content match; propensity logged)")
    explore_window_s: float = Field(default=_NEW.window_s, gt=0, description="how long a live-added item counts as new")
    explore_temperature: float = Field(default=_NEW.temperature, gt=0, description="softmax temperature of exploration draws")
    new_item_boost: float | None = Field(default=None, ge=0.0, le=1.0, description="new-item prior added to the score "
                                         "of items nobody interacted with yet; default: the value the run records "
                                         "(`new_item_policy` in run.json), else 0")

    log_flush_ms: int = Field(default=50, ge=1)
    log_batch: int = Field(default=1024, ge=1)
    log_max_bytes: int = Field(default=256 * 1024 * 1024, ge=4096, description="exposures/events logs rotate to a "
                               "numbered part when the active file would pass this size")
    log_keep_parts: int = Field(default=20, ge=1, description="rotated parts kept per log; older ones are deleted")

    events_flush_ms: int = Field(default=1000, ge=10, description="longest wait before accepted events are written "
                                 "to Parquet (and only then acknowledged in the Redis stream)")
    events_flush_batch: int = Field(default=5000, ge=1, description="events per Parquet part, at most")
    events_claim_idle_s: float = Field(default=30.0, gt=0, description="a stopped server's unflushed events are "
                                       "taken over by a running (or the restarted) one after this long")

    @model_validator(mode="after")
    def _check(self) -> "ServingSettings":
        assert 1 <= self.default_k <= self.max_k, f"default_k must lie in 1..max_k, got {self.default_k}"
        return self

    @property
    def open_writes(self) -> bool:
        """No key configured: dev mode, writes and admin calls need no key."""
        return self.api_key is None

    def check_auth(self) -> str | None:
        """Raise `ServingConfigError` for settings a server must not start with; else a warning or None.

        Without a key the server is a dev server: that is fine on loopback (the demo, tests, a
        laptop) but on a public interface anyone could post events or switch the model, so it is
        refused unless `allow_open_writes` says it is meant.
        """
        if self.read_key_required and self.api_key is None:
            raise ServingConfigError("RECSYS_SERVE_READ_KEY_REQUIRED is set but no RECSYS_SERVE_API_KEY is configured")
        if self.page_key and self.api_key is None:
            raise ServingConfigError("RECSYS_SERVE_PAGE_KEY derives the page's key from RECSYS_SERVE_API_KEY: set it")
        for name, key in (("API_KEY", self.api_key), ("ADMIN_TOKEN", self.admin_token)):
            if key is not None:
                _check_key(f"RECSYS_SERVE_{name}", key.get_secret_value())
        if not self.open_writes:
            return None
        if not _is_loopback(self.host) and not self.allow_open_writes:
            raise ServingConfigError(f"no API key configured and the server would listen on {self.host}: set "
                                     "RECSYS_SERVE_API_KEY, or RECSYS_SERVE_ALLOW_OPEN_WRITES=true for an open dev server")
        admin = "need RECSYS_SERVE_ADMIN_TOKEN" if self.admin_token is not None else "are open too"
        return (f"no RECSYS_SERVE_API_KEY configured: dev mode, POST /v1/events needs no key and admin calls {admin}"
                f" (listening on {self.host}); set a key in production")

    @property
    def host_allow_list(self) -> list[str]:
        """Host header names accepted; ["*"] accepts any."""
        if self.allowed_hosts is not None:
            return [h.strip().lower() for h in self.allowed_hosts if h.strip()] or ["*"]
        return list(LOOPBACK_HOST_NAMES) if _is_loopback(self.host) else ["*"]

    @property
    def runs_root_path(self) -> Path | None:
        """The folder admin model switches must stay under (resolved: no symlink or `..` way out)."""
        if self.runs_root is not None:
            return Path(self.runs_root).expanduser().resolve()
        return Path(self.run_dir).expanduser().resolve().parent if self.run_dir is not None else None

    @property
    def variant_weights(self) -> dict[str, float]:
        """Variant -> share of users; a single variant when no second run is configured."""
        if self.run_dir_b is None:
            return {"A": 1.0}
        return {"A": round(1.0 - self.split_b, 6), "B": round(self.split_b, 6)}


def _check_key(name: str, value: str) -> None:
    """A key must be a secret: 16+ characters, no whitespace (headers trim it), not one repeated character."""
    advice = "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    if any(c.isspace() for c in value):
        raise ServingConfigError(f"{name} contains whitespace (HTTP headers trim it, so it could never match): "
                                 f"use a random key without spaces {advice}")
    if len(value) < MIN_KEY_LENGTH:
        raise ServingConfigError(f"{name} is too short: use at least {MIN_KEY_LENGTH} characters {advice}")
    if len(set(value)) < MIN_KEY_DISTINCT:
        raise ServingConfigError(f"{name} is too easy to guess (fewer than {MIN_KEY_DISTINCT} distinct characters): "
                                 f"use a random key {advice}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
