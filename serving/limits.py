"""Request size and upload type limits, enforced before anything is parsed.

FastAPI reads a whole JSON body into memory before validating it, and a multipart parser spools
what it is sent, so without a limit one client can make the process hold gigabytes. The
middleware refuses a declared `Content-Length` above the route's limit at once, and counts the
bytes of bodies sent without one (chunked), failing them as soon as the limit is passed; both
answers are the API's JSON 413. Uploaded search files must declare (or, when the client sent a
generic type, look like) an image or audio format, else 415.
"""
from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import ServingError
from serving.responses import dumps

UPLOAD_PATHS = ("/v1/search",)
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/ogg"}


def _too_large(limit: int) -> str:
    return f"request body too large: at most {limit} bytes here"


class BodyLimitMiddleware:
    """Pure ASGI middleware (no per-request thread hop, no body buffering of its own)."""

    def __init__(self, app: Any, max_body_bytes: int, max_upload_bytes: int):
        self.app, self.max_body, self.max_upload = app, max_body_bytes, max_upload_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        uploads = scope["path"] in UPLOAD_PATHS or (scope["method"] == "PUT" and scope["path"].startswith("/v1/items/"))
        limit = self.max_upload if uploads else self.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return
        received = 0

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTP exceptions from body reading; the handler makes it JSON.
                    raise StarletteHTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Any, limit: int) -> None:
    body = dumps({"code": "payload_too_large", "message": _too_large(limit), "details": []})
    # Connection: close, since the unread body would otherwise be parsed as the next request.
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def sniff_medium(head: bytes) -> str | None:
    """'image' / 'audio' from a file's first bytes (the formats the encoders read), else None."""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio"
    if head.startswith((b"fLaC", b"OggS", b"ID3")) or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    if head[4:8] == b"ftyp" and head[8:12] in (b"M4A ", b"M4B ", b"mp42", b"isom"):  # m4a
        return "audio"
    return None


def check_upload_type(medium: str, content_type: str | None, head: bytes) -> None:
    """415 unless the file field `medium` ('image' / 'audio') carries that kind of file."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared.startswith(f"{medium}/"):
        return
    if declared in _GENERIC_TYPES and sniff_medium(head) == medium:
        return
    raise ServingError(415, "unsupported_media_type",
                       f"the '{medium}' field must be an {medium} file; got content type {declared or 'none'}"
                       + (" with unrecognised content" if declared in _GENERIC_TYPES else ""))
