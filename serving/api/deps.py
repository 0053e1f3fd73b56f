"""Dependencies injected into routes (`Depends`): the shared state and parsed common parameters.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, and
two thread hops per request cost more than everything else on the cache-hit path.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from serving.errors import ServingError
from serving.schemas import MediumName
from serving.state import ServingState


async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(get_state)]

_MEDIA = set(MediumName.__args__)


async def media_filter(media: Annotated[str | None, Query(
        description="comma-separated media to restrict results to (text, image, audio); default: all",
        examples=["image,audio"], max_length=100)] = None) -> frozenset[str] | None:
    """Parse `media=image,audio`; unknown names are a 422 that lists the valid ones."""
    return parse_media(media)


def parse_media(media: str | None) -> frozenset[str] | None:
    """`media_filter` for callers outside dependency injection (multipart search form)."""
    if media is None or not media.strip():
        return None
    names = frozenset(m.strip().lower() for m in media.split(",") if m.strip())
    unknown = sorted(names - _MEDIA)
    if unknown:
        raise ServingError(422, "invalid_media", f"unknown media {unknown}; expected a comma-separated subset of "
                                                 f"{sorted(_MEDIA)}")
    return names


MediaFilter = Annotated[frozenset[str] | None, Depends(media_filter)]


def check_k(k: int, state: ServingState) -> int:
    """`k` within the server's `max_k` (the OpenAPI bound is the API's ceiling; a server may set a lower one)."""
    if not 1 <= k <= state.settings.max_k:
        raise ServingError(422, "invalid_request", f"k: must lie in 1..{state.settings.max_k}, got {k}")
    return k
