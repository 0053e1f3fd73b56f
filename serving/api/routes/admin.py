"""Admin: which model versions serve, and switching one without downtime.

A switch only loads run directories under the runs root (`RECSYS_SERVE_RUNS_ROOT`, default the
parent folder of the run the server started with), resolved with symlinks and `..` followed, so
an admin key cannot make the server read an arbitrary folder. Every refused switch is logged.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from recsys.artifact import RunDirError
from serving.api.deps import State
from serving.auth import require_admin
from serving.errors import ServingError
from serving.schemas import ErrorBody, ModelInfo, ModelSwitch, ModelSwitched
from serving.versions import SwitchInProgress

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/model", response_model=list[ModelInfo], responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
            summary="Model versions serving each variant")
async def current_models(state: State) -> list[ModelInfo]:
    return [ModelInfo(variant=v, **state.models.get(v).describe()) for v in state.models.variants]


def allowed_run_dir(raw: str, root: Path | None) -> Path:
    """The resolved run directory, if it lies under `root`; else a 422 naming the root."""
    try:
        resolved = Path(raw).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a symlink loop
        raise ServingError(422, "invalid_run_dir", f"run directory refused, still serving the current version: "
                                                   f"unusable path ({err})") from err
    if root is not None and not resolved.is_relative_to(root):
        raise ServingError(422, "run_dir_not_allowed", f"run directory {raw!r} is outside the runs root {str(root)!r}; "
                                                       "only runs under it can be loaded (RECSYS_SERVE_RUNS_ROOT)")
    return resolved


@router.post("/model", response_model=ModelSwitched, summary="Switch a variant to another run directory",
             responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        422: {"model": ErrorBody}})
async def switch_model(state: State, request: Request, body: ModelSwitch) -> ModelSwitched:
    """Loads the run fully (the old version keeps serving meanwhile), then swaps atomically. A
    missing, partial, corrupt or code-carrying run directory, or one outside the runs root, is
    refused with 422 and nothing changes; 409 while another switch is loading."""
    try:
        if body.variant not in state.experiment.weights:
            raise ServingError(422, "unknown_variant", f"variant {body.variant!r} is not in the experiment "
                                                       f"(variants: {', '.join(state.experiment.weights)})")
        run_dir = allowed_run_dir(body.run_dir, state.settings.runs_root_path)
        try:
            retriever, previous, seconds = await state.models.switch(body.variant, run_dir)
        except SwitchInProgress as err:
            raise ServingError(409, "switch_in_progress", str(err)) from err
        except (RunDirError, OSError) as err:  # OSError: e.g. a path component too long, a file not readable
            raise ServingError(422, "invalid_run_dir", f"run directory refused, still serving the current version: "
                                                       f"{err}") from err
    except ServingError as err:
        client = request.client.host if request.client is not None else "?"
        log.warning("admin: model switch of variant %s to %r refused (from %s): %d %s: %s", body.variant,
                    body.run_dir[:300], client, err.status, err.code, err.message[:500])
        raise
    return ModelSwitched(previous_version=previous, load_seconds=round(seconds, 3),
                         model=ModelInfo(variant=body.variant, **retriever.describe()))
