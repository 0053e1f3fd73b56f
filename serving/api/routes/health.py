"""Liveness, readiness and Prometheus metrics.

Probes are unauthenticated, so they say which model serves but not where it lives on disk: the
run directory appears as its folder name only (`GET /admin/model` has the full path).
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

from serving.api.deps import State
from serving.metrics import metrics_text
from serving.redis_link import REDIS_ERRORS
from serving.schemas import Health, ModelInfo, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Models loaded; 'degraded' when Redis is unreachable",
            responses={503: {"model": Readiness, "description": "the online store holds another run's features"}})
async def readyz(state: State, response: Response) -> Readiness:
    """200 once a model is loaded: without Redis the server still answers (no cache, no live
    history), which load balancers should keep routing to; `status` says so. 503 when the online
    store was materialised for another dataset, data version or feature window than the served
    run(s): `problems` says which, and the command to run."""
    redis_ok = await state.link.ping() if state.link is not None else False
    models = [ModelInfo(variant=v, **public(state.models.get(v).describe())) for v in state.models.variants]
    history = state.feed.history
    problems = await history.problems([state.models.get(v).run.meta for v in state.models.variants]) \
        if history is not None and redis_ok else None
    if problems:
        response.status_code = 503
        return Readiness(status="not_ready", redis=redis_ok, models=models, problems=problems,
                         detail="; ".join(problems))
    detail = None if redis_ok else "Redis is unreachable: no cache, no live history, events refused (503)"
    if redis_ok and history is not None and not await _has_features(state):
        dataset = state.models.get(state.models.variants[0]).run.dataset
        detail = (f"Redis holds no online features (restarted without persistence?): events are refused (503) until "
                  f"`recsys features materialize --dataset {dataset}` runs against it")
    return Readiness(status="ok" if detail is None else "degraded", redis=redis_ok, models=models, detail=detail)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = metrics_text()  # with --workers N: summed over every worker
    return Response(body, media_type=content_type)


async def _has_features(state) -> bool:
    """Whether the online store has an active feature version (read now, not the feed's cached pointer)."""
    try:
        return await state.link.aio.exists(state.feed.history.keys.active) > 0
    except REDIS_ERRORS as err:
        state.link.failed(err)
        return False


def public(described: dict) -> dict:
    """A model's description without the server's file-system layout (the run folder's name only)."""
    return {**described, "run_dir": Path(str(described["run_dir"])).name}
