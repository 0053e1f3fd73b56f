"""POST /v1/search: content search by text (JSON) or by an uploaded image / audio clip (multipart)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.deps import State, check_k, parse_media
from serving.auth import require_read
from serving.errors import ServingError
from serving.feed import check_media, items_payload
from serving.limits import check_upload_type
from serving.schemas import ErrorBody, SearchResults, TextQuery
from serving.responses import JSONBytes, schema_bytes

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])

MAX_TEXT_QUERY_BYTES = 64 * 1024  # a JSON text query is at most 2000 characters
_UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "an image file (send image OR audio)"},
        "audio": {"type": "string", "format": "binary", "description": "an audio clip (wav, flac, ogg, mp3)"},
        "k": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
        "media": {"type": "string", "description": "comma-separated media to restrict results to"},
    },
}
_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/TextQuery"}},
    "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}}}


async def _read_query(request: Request, state: State) -> tuple[str, str | bytes, int, frozenset[str] | None]:
    """(medium, payload, k, media filter) from a JSON text query or a multipart upload.

    The body size is capped by `BodyLimitMiddleware` (`max_upload_bytes`, 413) before this reads it."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=state.settings.max_upload_bytes)
        except StarletteHTTPException as err:
            if err.status_code != 400:  # 413 from the body limit passes through
                raise
            raise ServingError(422, "invalid_request", f"malformed multipart body: {err.detail}") from None
        uploads = [(m, form[m]) for m in ("image", "audio") if isinstance(form.get(m), UploadFile)]
        if len(uploads) != 1:
            raise ServingError(422, "invalid_request", "multipart search needs exactly one file field: 'image' or 'audio'")
        medium, upload = uploads[0]
        data = await upload.read()
        if not data:
            raise ServingError(422, "invalid_query_content", f"the uploaded {medium} file is empty")
        check_upload_type(medium, upload.content_type, data[:16])
        raw_k = form.get("k", str(state.settings.default_k))
        try:
            k = int(raw_k) if isinstance(raw_k, str) else None
        except ValueError:
            k = None
        if k is None:
            raise ServingError(422, "invalid_request", "k: must be an integer")
        media = form.get("media")
        if media is not None and not isinstance(media, str):
            raise ServingError(422, "invalid_request", "media: must be a text field")
        return medium, data, check_k(k, state), parse_media(media)
    if content_type.startswith("application/json"):
        body = await request.body()
        if len(body) > MAX_TEXT_QUERY_BYTES:
            raise ServingError(413, "payload_too_large", f"a JSON text query is at most {MAX_TEXT_QUERY_BYTES} bytes")
        try:
            query = TextQuery.model_validate_json(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ServingError(422, "invalid_request", f"{where}: {first['msg']}",
                               [{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]) from None
        return "text", query.text, check_k(query.k, state), frozenset(query.media) if query.media else None
    raise ServingError(415, "unsupported_media_type",
                       "send JSON {\"text\": ...} or multipart/form-data with an 'image' or 'audio' file")


@router.post("/search", response_model=SearchResults, openapi_extra=_BODY,
             responses={401: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
                        422: {"model": ErrorBody}}, summary="Search items by content")
async def search(state: State, request: Request) -> JSONBytes:
    """Items of any medium nearest to the query after the run's content encoder and item tower;
    422 when the serving model cannot embed that medium, 413 above `max_upload_bytes`, 415 for a
    file that is not an image / audio clip."""
    medium, payload, k, media = await _read_query(request, state)
    retriever = state.models.get(state.models.variants[0])
    check_media(retriever, media)
    query = await asyncio.to_thread(state.search.query_vector, retriever, medium, payload)
    hits = retriever.search(query, min(k, state.settings.max_k), media)
    return JSONBytes(schema_bytes(SearchResults, {"query_medium": medium, "items": items_payload(retriever, hits),
                                                  "model_version": retriever.version}))
