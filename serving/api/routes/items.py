"""Items: neighbours (`GET .../similar`), and the live catalogue: `PUT` (add / replace) and
`DELETE` (take down) while serving. Writes need the API key, like events."""
from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.deps import MediaFilter, State, check_k
from serving.auth import require_read, require_write
from serving.catalogue_write import ItemInput
from serving.config import API_MAX_K
from serving.errors import ServingError
from serving.limits import check_upload_type
from serving.schemas import MAX_ID_LENGTH, ErrorBody, ItemDeleted, ItemFeatures, ItemWritten, SimilarItems
from serving.responses import JSONBytes

router = APIRouter(prefix="/v1/items", tags=["items"])
ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]

_UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "format": "binary", "description": "the item's text (UTF-8 file or form field)"},
        "image": {"type": "string", "format": "binary", "description": "an image file"},
        "audio": {"type": "string", "format": "binary", "description": "an audio clip (wav, flac, ogg, mp3)"},
        "metadata": {"type": "string", "description": "JSON object, e.g. {\"title\": \"...\"}"},
    },
}
_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ItemFeatures"}},
    "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}}}
_ERRORS = {401: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 422: {"model": ErrorBody}}


@router.get("/{item_id}/similar", response_model=SimilarItems, dependencies=[Depends(require_read)],
            responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
            summary="Items similar to an item")
async def similar(state: State, media: MediaFilter, item_id: ItemId,
                  k: Annotated[int, Query(ge=1, le=API_MAX_K)] = 20) -> JSONBytes:
    return JSONBytes(state.feed.similar(item_id, check_k(k, state), media))


async def _multipart(request: Request, state: State) -> ItemInput:
    try:
        form = await request.form(max_files=3, max_fields=10, max_part_size=state.settings.max_upload_bytes)
    except StarletteHTTPException as err:
        if err.status_code != 400:
            raise
        raise ServingError(422, "invalid_request", f"malformed multipart body: {err.detail}") from None
    unknown = sorted(set(form.keys()) - {"text", "image", "audio", "metadata"})
    if unknown:
        raise ServingError(422, "invalid_request", f"unknown form fields {unknown}; expected text, image, audio, metadata")
    item = ItemInput()
    for medium in ("text", "image", "audio"):
        value = form.get(medium)
        if value is None:
            continue
        data = await value.read() if isinstance(value, UploadFile) else value.encode("utf-8")
        if not data:
            raise ServingError(422, "invalid_item_content", f"the {medium} file is empty")
        if medium == "text":
            try:
                item.files["text"] = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ServingError(422, "invalid_item_content", f"text: not valid UTF-8 ({err})") from None
        else:
            if not isinstance(value, UploadFile):
                raise ServingError(422, "invalid_request", f"{medium}: must be a file")
            check_upload_type(medium, value.content_type, data[:16])
            item.files[medium] = data
    raw = form.get("metadata")
    if raw is not None:
        try:
            item.metadata = json.loads(raw if isinstance(raw, str) else await raw.read())
        except ValueError as err:
            raise ServingError(422, "invalid_item", f"metadata: not valid JSON ({err})") from None
    return item


async def _json(request: Request) -> ItemInput:
    try:
        body = ItemFeatures.model_validate_json(await request.body())
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ServingError(422, "invalid_request", f"{where}: {first['msg']}",
                           [{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]) from None
    item = ItemInput(vectors=dict(body.features), metadata=body.metadata)
    if body.text is not None:
        item.files["text"] = body.text
    return item


@router.put("/{item_id}", response_model=ItemWritten, openapi_extra=_BODY, dependencies=[Depends(require_write)],
            status_code=201, responses={200: {"model": ItemWritten}, **_ERRORS},
            summary="Add or replace an item while serving (multipart media or JSON precomputed vectors)")
async def put_item(state: State, request: Request, item_id: ItemId) -> JSONResponse:
    """Embeds the item with every served version's encoders and content path, logs it durably and
    makes it servable (similar, search, feeds). 201 created, 200 replaced or unchanged; 4xx naming the
    problem, and then nothing is stored."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        item = await _multipart(request, state)
    elif content_type.startswith("application/json"):
        item = await _json(request)
    else:
        raise ServingError(415, "unsupported_media_type", "send multipart/form-data (text, image, audio files + "
                                                          "metadata) or JSON {\"features\": {...}, \"metadata\": {...}}")
    status, body = await state.catalogue.put(item_id, item)
    return JSONResponse(ItemWritten(**body).model_dump(), status_code=status)


@router.delete("/{item_id}", response_model=ItemDeleted, dependencies=[Depends(require_write)],
               responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}}, summary="Take an item down")
async def delete_item(state: State, item_id: ItemId) -> ItemDeleted:
    """After the 200 the item is in no answer (feeds, similar, search), cached answers included."""
    return ItemDeleted(**await state.catalogue.delete(item_id))
