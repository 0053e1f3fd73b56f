"""Every error the API returns is JSON `{"code", "message", "details"}` (4xx; 503 when a dependency
is down; 500 only for a bug, whose traceback goes to the log, never to the client).

Clients (and the front end) branch on `code` and show `message`; a traceback never leaves the
process. Validation errors keep FastAPI's precise locations in `details`.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServingError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or []}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()]


def error_response(exc: ServingError) -> JSONResponse:
    """The response of a `ServingError`, wherever it is raised (a route, the feed's fast path)."""
    return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=exc.status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on `app`."""

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body",)) or "request"
        return JSONResponse(_body("invalid_request", f"{where}: {first['msg']}", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(_body(codes.get(exc.status_code, "http_error"), message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal_error", f"internal error ({exc.__class__.__name__}); it has been logged"),
                            status_code=500)
