"""Admin: which model versions serve, and switching one without downtime."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from recsys.artifact import RunDirError
from serving.api.deps import State
from serving.auth import require_admin
from serving.errors import ServingError
from serving.schemas import ErrorBody, ModelInfo, ModelSwitch, ModelSwitched

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/model", response_model=list[ModelInfo], responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
            summary="Model versions serving each variant")
async def current_models(state: State) -> list[ModelInfo]:
    return [ModelInfo(variant=v, **state.models.get(v).describe()) for v in state.models.variants]


@router.post("/model", response_model=ModelSwitched, summary="Switch a variant to another run directory",
             responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}})
async def switch_model(state: State, body: ModelSwitch) -> ModelSwitched:
    """Loads the run fully (the old version keeps serving meanwhile), then swaps atomically. A
    missing, partial or corrupt run directory is refused with 422 and nothing changes."""
    if body.variant not in state.experiment.weights:
        raise ServingError(422, "unknown_variant", f"variant {body.variant!r} is not in the experiment "
                                                   f"(variants: {', '.join(state.experiment.weights)})")
    try:
        retriever, previous, seconds = await state.models.switch(body.variant, body.run_dir)
    except (RunDirError, OSError) as err:  # OSError: e.g. a path component too long, a file not readable
        raise ServingError(422, "invalid_run_dir", f"run directory refused, still serving the current version: {err}") from err
    return ModelSwitched(previous_version=previous, load_seconds=round(seconds, 3),
                         model=ModelInfo(variant=body.variant, **retriever.describe()))
