"""POST /v1/events: user events, appended to the online history in real time."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from serving.api.deps import State
from serving.auth import check_page_events, require_write
from serving.schemas import ErrorBody, Event, EventBatch, EventsAccepted

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Depends(require_write)])


@router.post("/events", response_model=EventsAccepted, status_code=202,
             responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 409: {"model": ErrorBody},
                        413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 429: {"model": ErrorBody},
                        503: {"model": ErrorBody}}, summary="Record one event or a batch")
async def post_events(state: State, request: Request, body: EventBatch | Event) -> EventsAccepted:
    """Accepts `{"events": [...]}` or a single event object. 202 means the events are durably
    recorded (Redis stream, flushed to the offline Parquet store). Retried event ids are reported as
    duplicates and not appended twice, but an id reused with a different payload is a 409; an unknown
    item id or a `ts` too far in the future rejects the whole batch (422). The explorer page's
    session may post only its own user's events (403), at a limited rate (429)."""
    events = body.events if isinstance(body, EventBatch) else [body]
    check_page_events(request, [e.user_id for e in events])
    return await state.events.ingest(events)
