"""GET /v1/items/{item_id}/similar: item-to-item neighbours across media."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serving.api.deps import MediaFilter, State
from serving.models import ErrorBody, SimilarItems
from serving.responses import JSONBytes

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.get("/{item_id}/similar", response_model=SimilarItems,
            responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}}, summary="Items similar to an item")
async def similar(state: State, media: MediaFilter, item_id: Annotated[str, Path(min_length=1, max_length=200)],
                  k: Annotated[int, Query(ge=1, le=200)] = 20) -> JSONBytes:
    return JSONBytes(state.feed.similar(item_id, min(k, state.settings.max_k), media))
