"""API keys: who may write events, switch models and (when configured) read feeds.

Three scopes, each a route dependency (`require_read`, `require_write`, `require_admin`):

* read (feeds, similar items, search, explorer data): open unless `read_key_required`;
* write (POST /v1/events): needs `api_key` (or the admin token);
* admin (/admin/*): needs `admin_token` when set (the pre-existing `X-Admin-Token`), else `api_key`.

Without any key the server is a dev server (demo, tests, a laptop): every scope is open and a
warning is logged at start; `ServingSettings.check_auth` refuses that on a non-loopback host.

Keys arrive as header `X-API-Key` (the legacy `X-Admin-Token` header is read too). Comparisons
use `hmac.compare_digest` so response timing says nothing about how much of a guess was right.
Every refusal is logged (method, path, scope, reason, client address; never a key).

The explorer page (`page_key` on) must not weaken that policy, because anyone who can load `/`
gets its cookie. So the cookie is not a key: it is a *page session* bound to one new visitor id
(`visitor-<random>`), signed with a secret derived from `api_key` (every replica derives the
same one; rotating `api_key` ends all sessions) and expiring after `page_session_ttl_s`. It
allows, and only while reads or writes would otherwise need a key:

* reads of its own user's routes (`/v1/users/<visitor id>/...`), nothing else;
* `POST /v1/events` whose events are all for its own user, at most `page_events_per_minute`;
* never admin calls, never another user's feed or events. A raw API key sent as the cookie is
  not a page session and counts for nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.responses import Response

from serving.config import ServingSettings
from serving.errors import ServingError

log = logging.getLogger(__name__)

Scope = Literal["read", "write", "admin"]
API_KEY_HEADER = "X-API-Key"
LEGACY_ADMIN_HEADER = "x-admin-token"
PAGE_COOKIE = "recsys_page_session"
PAGE_USER_PREFIX = "visitor-"
EVENTS_PATH = "/v1/events"
_MAX_TRACKED_SESSIONS = 10_000  # rate-limit windows kept in memory (oldest dropped first)

_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey",
                       description="RECSYS_SERVE_API_KEY (admin calls: RECSYS_SERVE_ADMIN_TOKEN when it is set)")


def _matches(presented: list[str], accepted: list[bytes]) -> bool:
    ok = False
    for candidate in presented:
        raw = candidate.encode()
        for key in accepted:
            ok |= hmac.compare_digest(raw, key)  # no early exit: every comparison runs
    return ok


@dataclass(frozen=True)
class PageSession:
    """A verified page cookie: the one user it may act for."""

    user_id: str
    expires: int


class PageSessions:
    """Issue and verify page cookies, and rate-limit the events each one posts.

    Args:
        api_key: the server's API key (the signing secret is derived from it).
        ttl_s: lifetime of a cookie.
        events_per_minute: events one session may post in any 60 s window.
    """

    def __init__(self, api_key: str, ttl_s: int, events_per_minute: int):
        self._secret = hmac.new(api_key.encode(), b"recsys explorer page sessions v2", hashlib.sha256).digest()
        self.ttl_s, self.events_per_minute = ttl_s, events_per_minute
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _sign(self, user_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{user_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def issue(self, user_id: str | None = None) -> str:
        user_id = user_id or PAGE_USER_PREFIX + secrets.token_hex(8)
        expires = int(time.time()) + self.ttl_s
        return f"{user_id}.{expires}.{self._sign(user_id, expires)}"

    def verify(self, token: str | None) -> PageSession | None:
        """The session a cookie proves, or None (forged, expired, or not a session at all)."""
        if not token or token.count(".") != 2:
            return None
        user_id, expires_text, signature = token.split(".")
        if not user_id.startswith(PAGE_USER_PREFIX) or not expires_text.isdigit():
            return None
        expires = int(expires_text)
        if not hmac.compare_digest(signature.encode(), self._sign(user_id, expires).encode()) or expires < time.time():
            return None
        return PageSession(user_id, expires)

    def spend(self, session: PageSession, n_events: int) -> None:
        """Count `n_events` against the session's per-minute budget; 429 when it is spent."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.pop(session.user_id, None) or deque()
            while window and window[0] <= now - 60.0:
                window.popleft()
            allowed = len(window) + n_events <= self.events_per_minute
            if allowed:
                window.extend([now] * n_events)
            self._windows[session.user_id] = window
            while len(self._windows) > _MAX_TRACKED_SESSIONS:
                self._windows.popitem(last=False)
        if not allowed:
            raise ServingError(429, "rate_limited", f"the explorer page may post at most {self.events_per_minute} "
                                                    "events per minute; wait a little")


class KeyRing:
    """Accepted keys per scope, built once from the settings."""

    def __init__(self, settings: ServingSettings):
        api = settings.api_key.get_secret_value() if settings.api_key is not None else None
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
        admin_keys = [admin] if admin is not None else ([api] if api is not None else [])
        self.pages = (PageSessions(api, settings.page_session_ttl_s, settings.page_events_per_minute)
                      if api is not None and settings.page_key else None)
        self._keys: dict[Scope, list[bytes]] = {
            "read": [k.encode() for k in (api, admin) if k is not None],
            "write": [k.encode() for k in (api, admin) if k is not None],
            "admin": [k.encode() for k in admin_keys],
        }
        self._open: dict[Scope, bool] = {"read": not settings.read_key_required, "write": api is None,
                                          "admin": not admin_keys}

    def page_session(self, request: Request) -> PageSession | None:
        return self.pages.verify(request.cookies.get(PAGE_COOKIE)) if self.pages is not None else None

    def admits(self, scope: Scope, presented: list[str]) -> bool:
        """The scope is open, or a presented key holds it (no page session, no logging): what `check`
        lets through first, and all the feed's fast path (`serving.api.fast_feed`) accepts itself."""
        return self._open[scope] or _matches(presented, self._keys[scope])

    def check(self, scope: Scope, request: Request, presented: list[str]) -> None:
        """Raise 401 (no or wrong key) or 403 (a key or page session without this scope)."""
        if self.admits(scope, presented):
            return
        session = self.page_session(request) if scope != "admin" else None
        if session is not None and not presented:
            self._check_page(scope, request, session)
            return
        if scope == "admin" and presented and _matches(presented, self._keys["write"]):
            raise _refused(request, scope, 403, "forbidden", "this key cannot call admin endpoints")
        if not presented:
            what = {"read": "reads on this server need", "write": "writes need", "admin": "admin endpoints need"}[scope]
            raise _refused(request, scope, 401, "unauthorized", f"{what} an API key: send header {API_KEY_HEADER}")
        raise _refused(request, scope, 401, "unauthorized", f"invalid API key (header {API_KEY_HEADER})")

    def _check_page(self, scope: Scope, request: Request, session: PageSession) -> None:
        """A page session reads its own user's routes and posts its own user's events; nothing else."""
        if scope == "write" and request.url.path == EVENTS_PATH:
            request.state.page_session = session  # the route checks each event's user and the rate
            return
        if scope == "read" and request.path_params.get("user_id") == session.user_id:
            return
        raise _refused(request, scope, 403, "forbidden", f"the explorer page's session may only "
                       f"{'read' if scope == 'read' else 'post events'} for its own user '{session.user_id}'; "
                       f"send header {API_KEY_HEADER} for anything else")

    def set_page_cookie(self, request: Request, response: Response) -> str | None:
        """Give the page a session (keeping a valid one); returns its user id, None when `page_key` is off."""
        if self.pages is None:
            return None
        session = self.page_session(request)
        token = self.pages.issue(session.user_id if session is not None else None)
        response.set_cookie(PAGE_COOKIE, token, max_age=self.pages.ttl_s, httponly=True, samesite="strict", path="/")
        return token.split(".", 1)[0]


def check_page_events(request: Request, user_ids: list[str]) -> None:
    """For `POST /v1/events` authorised by a page session: every event is its user's, within the rate."""
    session: PageSession | None = getattr(request.state, "page_session", None)
    if session is None:
        return
    others = sorted({u for u in user_ids if u != session.user_id})
    if others:
        raise _refused(request, "write", 403, "forbidden", f"the explorer page's session may only post events for "
                       f"its own user '{session.user_id}', not {', '.join(repr(u) for u in others[:5])}")
    request.app.state.serving.keys.pages.spend(session, len(user_ids))


def _refused(request: Request, scope: Scope, status: int, code: str, message: str) -> ServingError:
    """The error to raise, logged first (no key material: only where the request came from)."""
    client = request.client.host if request.client is not None else "?"
    log.warning("auth refused: %s %s (scope %s) from %s: %d %s", request.method, request.url.path, scope, client,
                status, message)
    return ServingError(status, code, message)


def set_page_cookie(request: Request, response: Response) -> str | None:
    """The explorer page's session cookie, when the app's state exists (the page is served without a model too)."""
    state = getattr(request.app.state, "serving", None)
    return state.keys.set_page_cookie(request, response) if state is not None else None


def page_user(request: Request) -> str | None:
    """The user the request's valid page session is bound to, if any."""
    state = getattr(request.app.state, "serving", None)
    session = state.keys.page_session(request) if state is not None else None
    return session.user_id if session is not None else None


def _presented(request: Request, header_key: str | None) -> list[str]:
    return [k for k in (header_key, request.headers.get(LEGACY_ADMIN_HEADER)) if k]


async def require_read(request: Request) -> None:
    """Reads: open unless RECSYS_SERVE_READ_KEY_REQUIRED (not declared in OpenAPI, being optional)."""
    request.app.state.serving.keys.check("read", request, _presented(request, request.headers.get(API_KEY_HEADER)))


async def require_write(request: Request, key: Annotated[str | None, Security(_header)] = None) -> None:
    request.app.state.serving.keys.check("write", request, _presented(request, key))


async def require_admin(request: Request, key: Annotated[str | None, Security(_header)] = None) -> None:
    request.app.state.serving.keys.check("admin", request, _presented(request, key))
