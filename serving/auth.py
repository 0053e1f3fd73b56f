"""API keys: who may write events, switch models and (when configured) read feeds.

Three scopes, each a route dependency (`require_read`, `require_write`, `require_admin`):

* read (feeds, similar items, search, explorer data): open unless `read_key_required`;
* write (POST /v1/events): needs `api_key` (or the admin token, or the explorer page's key);
* admin (/admin/*): needs `admin_token` when set (the pre-existing `X-Admin-Token`), else `api_key`.

Without any key the server is a dev server (demo, tests, a laptop): every scope is open and a
warning is logged at start; `ServingSettings.check_auth` refuses that on a non-loopback host.

Keys arrive as header `X-API-Key` (the legacy `X-Admin-Token` header is read too) or, for the
explorer page only, as an HttpOnly SameSite=Strict cookie set on `GET /` when `page_key` is on:
`<img src>` and `fetch` then carry it without any key in the page's script, and a cross-site page
cannot make the browser send it. The page key is an HMAC of `api_key`, so every replica derives the
same one and rotating `api_key` rotates it; it never grants admin. Comparisons use
`hmac.compare_digest` so response timing says nothing about how much of a guess was right.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.responses import Response

from serving.config import ServingSettings
from serving.errors import ServingError

Scope = Literal["read", "write", "admin"]
API_KEY_HEADER = "X-API-Key"
LEGACY_ADMIN_HEADER = "x-admin-token"
PAGE_COOKIE = "recsys_page_key"

_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
                       description="RECSYS_SERVE_API_KEY (admin calls: RECSYS_SERVE_ADMIN_TOKEN when it is set)")


def page_key(api_key: str) -> str:
    """The explorer page's key: derived from the API key, so it changes when that key does."""
    return hmac.new(api_key.encode(), b"recsys explorer page: read + events", hashlib.sha256).hexdigest()


def _matches(presented: list[str], accepted: list[bytes]) -> bool:
    ok = False
    for candidate in presented:
        raw = candidate.encode()
        for key in accepted:
            ok |= hmac.compare_digest(raw, key)  # no early exit: every comparison runs
    return ok


class KeyRing:
    """Accepted keys per scope, built once from the settings."""

    def __init__(self, settings: ServingSettings):
        api = settings.api_key.get_secret_value() if settings.api_key is not None else None
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
        page = page_key(api) if api is not None and settings.page_key else None
        admin_keys = [admin] if admin is not None else ([api] if api is not None else [])
        self._page = page
        self._keys: dict[Scope, list[bytes]] = {
            "read": [k.encode() for k in (api, admin, page) if k is not None],
            "write": [k.encode() for k in (api, admin, page) if k is not None],
            "admin": [k.encode() for k in admin_keys],
        }
        self._open: dict[Scope, bool] = {"read": not settings.read_key_required, "write": api is None,
                                          "admin": not admin_keys}

    def check(self, scope: Scope, presented: list[str]) -> None:
        """Raise 401 (no or wrong key) or 403 (a key of this server without the scope)."""
        if self._open[scope]:
            return
        if _matches(presented, self._keys[scope]):
            return
        if not presented:
            what = {"read": "reads on this server need", "write": "writes need", "admin": "admin endpoints need"}[scope]
            raise ServingError(401, "unauthorized", f"{what} an API key: send header {API_KEY_HEADER}")
        if scope == "admin" and _matches(presented, self._keys["write"]):
            raise ServingError(403, "forbidden", "this key cannot call admin endpoints")
        raise ServingError(401, "unauthorized", f"invalid API key (header {API_KEY_HEADER})")

    def set_page_cookie(self, response: Response) -> None:
        """Give the explorer page its key (no-op unless `page_key` is on)."""
        if self._page is not None:
            response.set_cookie(PAGE_COOKIE, self._page, httponly=True, samesite="strict", path="/")


def set_page_cookie(request: Request, response: Response) -> None:
    """The explorer page's cookie, when the app's state exists (the page is served without a model too)."""
    state = getattr(request.app.state, "serving", None)
    if state is not None:
        state.keys.set_page_cookie(response)


def _presented(request: Request, header_key: str | None) -> list[str]:
    keys = [k for k in (header_key, request.headers.get(LEGACY_ADMIN_HEADER), request.cookies.get(PAGE_COOKIE)) if k]
    return keys


async def require_read(request: Request) -> None:
    """Reads: open unless RECSYS_SERVE_READ_KEY_REQUIRED (not declared in OpenAPI, being optional)."""
    request.app.state.serving.keys.check("read", _presented(request, request.headers.get(API_KEY_HEADER)))


async def require_write(request: Request, key: Annotated[str | None, Security(_header)] = None) -> None:
    request.app.state.serving.keys.check("write", _presented(request, key))


async def require_admin(request: Request, key: Annotated[str | None, Security(_header)] = None) -> None:
    request.app.state.serving.keys.check("admin", _presented(request, key))
