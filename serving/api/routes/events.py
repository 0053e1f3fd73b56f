"""POST /v1/events: user events, appended to the online history in real time."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.api.deps import State
from serving.auth import require_write
from serving.schemas import ErrorBody, Event, EventBatch, EventsAccepted

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Depends(require_write)])


@router.post("/events", response_model=EventsAccepted, status_code=202,
             responses={401: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
                        503: {"model": ErrorBody}}, summary="Record one event or a batch")
async def post_events(state: State, body: EventBatch | Event) -> EventsAccepted:
    """Accepts `{"events": [...]}` or a single event object. 202 means the events are durably
    recorded (Redis stream, flushed to the offline Parquet store). Retried event ids are reported as
    duplicates and not appended twice; an unknown item id rejects the whole batch (422)."""
    events = body.events if isinstance(body, EventBatch) else [body]
    return await state.events.ingest(events)
