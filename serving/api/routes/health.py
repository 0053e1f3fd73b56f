"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import State
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
    models = [ModelInfo(variant=v, **state.models.get(v).describe()) for v in state.models.variants]
    history = state.feed.history
    problems = await history.problems([state.models.get(v).run.meta for v in state.models.variants]) \
        if history is not None and redis_ok else None
    if problems:
        response.status_code = 503
        return Readiness(status="not_ready", redis=redis_ok, models=models, problems=problems)
    return Readiness(status="ok" if redis_ok else "degraded", redis=redis_ok, models=models)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
