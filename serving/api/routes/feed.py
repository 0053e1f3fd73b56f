"""GET /v1/users/{user_id}/recommendations: the personalised, cross-media feed."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serving.api.deps import MediaFilter, State, check_k
from serving.auth import require_read
from serving.config import API_MAX_K
from serving.schemas import MAX_ID_LENGTH, ErrorBody, Recommendations
from serving.responses import JSONBytes

router = APIRouter(prefix="/v1/users", tags=["feed"], dependencies=[Depends(require_read)])


@router.get("/{user_id}/recommendations", response_model=Recommendations,
            responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}},
            summary="Recommendations for a user (unknown users: cold start)")
async def recommendations(state: State, media: MediaFilter,
                          user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
                          k: Annotated[int, Query(ge=1, le=API_MAX_K)] = 20,
                          exclude_seen: bool = True) -> JSONBytes:
    """Top-k items for the user's current history (offline + live events), mixing media unless
    `media` restricts them. Returned as cached JSON bytes (the model documents the shape)."""
    k = check_k(k, state)
    return JSONBytes(await state.feed.recommend(user_id, k, media, exclude_seen))
