"""POST /v1/search: content search by text (JSON) or by an uploaded image / audio clip (multipart)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import ValidationError

from serving.api.deps import State, parse_media
from serving.errors import ServingError
from serving.feed import check_media, items_payload
from serving.models import ErrorBody, SearchResults, TextQuery
from serving.responses import JSONBytes, dumps

router = APIRouter(prefix="/v1", tags=["search"])

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
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


async def _read_query(request: Request) -> tuple[str, str | bytes, int, frozenset[str] | None]:
    """(medium, payload, k, media filter) from a JSON text query or a multipart upload."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_part_size=MAX_UPLOAD_BYTES)
        uploads = [(m, form[m]) for m in ("image", "audio") if m in form and hasattr(form[m], "read")]
        if len(uploads) != 1:
            raise ServingError(422, "invalid_request", "multipart search needs exactly one file field: 'image' or 'audio'")
        medium, upload = uploads[0]
        data = await upload.read()
        if not data:
            raise ServingError(422, "invalid_query_content", f"the uploaded {medium} file is empty")
        try:
            k = int(form.get("k", 20))
        except ValueError:
            raise ServingError(422, "invalid_request", "k: must be an integer") from None
        if not 1 <= k <= 200:
            raise ServingError(422, "invalid_request", "k: must lie in 1..200")
        return medium, data, k, parse_media(form.get("media"))
    if content_type.startswith("application/json"):
        try:
            query = TextQuery.model_validate_json(await request.body())
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ServingError(422, "invalid_request", f"{where}: {first['msg']}",
                               [{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]) from None
        return "text", query.text, query.k, frozenset(query.media) if query.media else None
    raise ServingError(415, "unsupported_media_type",
                       "send JSON {\"text\": ...} or multipart/form-data with an 'image' or 'audio' file")


@router.post("/search", response_model=SearchResults, openapi_extra=_BODY,
             responses={415: {"model": ErrorBody}, 422: {"model": ErrorBody}}, summary="Search items by content")
async def search(state: State, request: Request) -> JSONBytes:
    """Items of any medium nearest to the query after the run's content encoder and item tower;
    422 when the serving model cannot embed that medium."""
    medium, payload, k, media = await _read_query(request)
    retriever = state.models.get(state.models.variants[0])
    check_media(retriever, media)
    query = await asyncio.to_thread(state.search.query_vector, retriever, medium, payload)
    hits = retriever.search(query, min(k, state.settings.max_k), media)
    return JSONBytes(dumps({"query_medium": medium, "items": items_payload(retriever, hits),
                            "model_version": retriever.version}))
