"""GET /v1/items/{item_id}/similar: item-to-item neighbours across media."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serving.api.deps import MediaFilter, State, check_k
from serving.auth import require_read
from serving.config import API_MAX_K
from serving.schemas import MAX_ID_LENGTH, ErrorBody, SimilarItems
from serving.responses import JSONBytes

router = APIRouter(prefix="/v1/items", tags=["items"], dependencies=[Depends(require_read)])


@router.get("/{item_id}/similar", response_model=SimilarItems,
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
            summary="Items similar to an item")
async def similar(state: State, media: MediaFilter,
                  item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
                  k: Annotated[int, Query(ge=1, le=API_MAX_K)] = 20) -> JSONBytes:
    return JSONBytes(state.feed.similar(item_id, check_k(k, state), media))
