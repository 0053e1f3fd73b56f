"""Request and response schemas: the API contract (and the OpenAPI document) in one place."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from recsys.data.schema import MEDIA

MediumName = Literal["text", "image", "audio"]
MAX_ID_LENGTH = 200  # user, item and event ids: longer ones are a 422, not a Redis key of any size
MAX_EVENT_TS = 1e10  # unix seconds (year 2286): a millisecond timestamp is a client bug, refused with 422
assert set(MediumName.__args__) == set(MEDIA), "MediumName must list recsys.data.schema.MEDIA"


class ErrorBody(BaseModel):
    """Every 4xx answer."""

    code: str = Field(description="stable machine-readable error code, e.g. unknown_item")
    message: str = Field(description="what went wrong, for a person")
    details: list = Field(default_factory=list, description="per-field problems for validation errors")


class FeedItem(BaseModel):
    item_id: str
    media: list[str]
    score: float = Field(description="inner product with the query (cold start: popularity share)")
    title: str | None = None


class Recommendations(BaseModel):
    items: list[FeedItem]
    model_version: str
    variant: str = Field(description="A/B variant the user is assigned to")
    cold_start: bool = Field(description="True when the user had no usable history (popular + diverse list)")


class SimilarItems(BaseModel):
    item_id: str
    items: list[FeedItem]
    model_version: str


class TextQuery(BaseModel):
    """JSON body of POST /v1/search (uploads use multipart with a field `image` or `audio`)."""

    text: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=20, ge=1, le=200)
    media: list[MediumName] | None = Field(default=None, description="restrict results to these media")


class SearchResults(BaseModel):
    query_medium: str
    items: list[FeedItem]
    model_version: str


class Event(BaseModel):
    event_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH,
                          description="client-chosen id; a retry with the same id is ignored")
    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    event_type: str = Field(min_length=1, max_length=50, description="click, view, like, ...")
    ts: float | None = Field(default=None, ge=0, le=MAX_EVENT_TS, allow_inf_nan=False, strict=True,
                             description="unix seconds (a JSON number: not a string, not true/false), at most "
                                         "RECSYS_SERVE_MAX_EVENT_SKEW_S ahead of the server's clock; "
                                         "default: time of receipt")


class EventBatch(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=1000)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events appended to the users' online histories")
    duplicates: list[str] = Field(description="event ids seen before (retries); not appended again")


class ModelSwitch(BaseModel):
    run_dir: str = Field(min_length=1, max_length=4096)
    variant: Literal["A", "B"] = "A"


class IndexReport(BaseModel):
    """Which nearest-neighbour index serves, why, and its recall measured when it was built."""

    kind: str = Field(description="flat (exact), hnsw, ivf, ivf_sq8 or ivf_pq")
    reason: str = Field(description="why `auto` chose it (size, width, memory budget) or 'set explicitly'")
    nlist: int | None
    pq_bytes: int | None
    search_params: dict[str, int] = Field(description="the search-time knob: efSearch (HNSW) or nprobe (IVF)")
    recall_at_20: float | None = Field(description="recall@20 against exact search on recall_queries sampled users")
    recall_queries: int
    target_recall: float
    estimated_bytes: int = Field(description="the index's own memory estimate (beyond the memory-mapped vectors)")
    memory_budget_bytes: int | None
    build_seconds: float = Field(description="build, or read / map of a stored index, plus calibration")
    source: str = Field(description="exact, built, read (a stored index read into the process) or mapped")


class ModelInfo(BaseModel):
    variant: str
    model_version: str
    dataset: str
    run_dir: str
    n_items: int
    dim: int
    index_kind: str
    media: list[str]
    index: IndexReport
    user_tower_runtime: str = Field(description="what computes a live user's vector: onnxruntime, torchscript or "
                                    "eager (the trained tower, setting RECSYS_USER_TOWER_RUNTIME, after any "
                                    "fallback), numpy for a mean-pool run")


class ModelSwitched(BaseModel):
    previous_version: str | None
    load_seconds: float
    model: ModelInfo


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "not_ready"]
    redis: bool = Field(description="False: answers are computed without cache and live history")
    models: list[ModelInfo]
    detail: str | None = Field(default=None, description="why the status is 'degraded', and what to run")
    problems: list[str] = Field(default_factory=list, description="why not ready: the online store was "
                                "materialised for another dataset, data version or feature window, and what to run")


# ---- live catalogue (PUT / DELETE /v1/items/{item_id}) ----
class ItemFeatures(BaseModel):
    """JSON body of `PUT /v1/items/{id}`: encoder outputs per medium (precomputed vectors, e.g. TikTok's
    128-d image / audio features) and free metadata; `metadata.title` is shown in answers."""

    model_config = {"extra": "forbid"}
    features: dict[Literal["text", "image", "audio"], list[float]] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(default=None, max_length=20_000, description="the item's text, embedded by the run's encoder")


class ItemWritten(BaseModel):
    item_id: str
    status: Literal["created", "updated", "unchanged"]
    media: list[str]
    model_version: str = Field(description="variant A's model version")
    vector_version: str = Field(description="variant A's vector of this item: model version and vector hash")
    vector_versions: dict[str, str] = Field(description="per served variant")


class ItemDeleted(BaseModel):
    item_id: str
    status: Literal["deleted"]
    model_versions: dict[str, str]
