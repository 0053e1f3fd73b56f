"""The feed's fast path: `GET /v1/users/{user_id}/recommendations` answered without FastAPI's
routing, dependency injection and parameter validation, which cost ~0.3-0.4 ms of CPU per request
on this machine (a raw ASGI app answers in 0.23 ms, FastAPI's `/healthz` in 0.55 ms), as much as a
whole cache hit's own work.

One implementation of the route, two ways in: this middleware answers a request only when it can
tell, with the same rules, that the FastAPI route (`serving.api.routes.feed`) would accept it, and
then calls the same code the route calls (`Feed.recommend`, `check_k`, `parse_media`, the key
ring's `admits`, `error_response`) and sends the same response class. Anything else (an invalid
or unusual parameter, a missing key, a page session, a repeated parameter, a HEAD) goes on to the
FastAPI app untouched, which answers it as before, so every error shape stays where it is
defined. `tests/test_serving_fast_feed.py` sends the same requests both ways and compares status,
headers and body. The OpenAPI contract is the route's: the bytes are the `Recommendations`
schema's output either way (`Feed.recommend` builds them through it).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI

from serving.api.deps import check_k, parse_media
from serving.auth import API_KEY_HEADER, LEGACY_ADMIN_HEADER
from serving.config import API_MAX_K
from serving.errors import ServingError, error_response
from serving.metrics import ROUTE_TEMPLATE_KEY
from serving.responses import JSONBytes
from serving.schemas import MAX_ID_LENGTH

FEED_ROUTE = "/v1/users/{user_id}/recommendations"
_PATH = re.compile(r"^/v1/users/([^/]+)/recommendations$")  # Starlette's `{user_id}`: one segment
_K = re.compile(r"^[0-9]{1,4}$")  # what the route's `int` parses exactly like this; anything else goes there
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_MEDIA_MAX_LENGTH = 100  # `media_filter`'s Query(max_length=100)
_KEY_HEADERS = (API_KEY_HEADER.lower().encode("latin-1"), LEGACY_ADMIN_HEADER.lower().encode("latin-1"))


class FeedFastPath:
    """Pure ASGI middleware in front of the FastAPI app (inside the host check, latency timing and
    `X-Served-By`, which apply to every request alike)."""

    def __init__(self, app: Any, api: FastAPI):
        self.app, self.api = app, api

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            match = _PATH.match(scope["path"])
            if match is not None:
                state = getattr(self.api.state, "serving", None)
                params = _params(match.group(1), scope, state) if state is not None else None
                if params is not None:
                    await self._answer(state, params, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, state: Any, params: tuple, scope: dict, receive: Any, send: Any) -> None:
        scope[ROUTE_TEMPLATE_KEY] = FEED_ROUTE  # LatencyMiddleware's label, as the route's own requests get
        user_id, k, media, exclude_seen = params
        try:
            response = JSONBytes(await state.feed.recommend(user_id, k, media, exclude_seen))
        except ServingError as err:
            response = error_response(err)
        await response(scope, receive, send)


def _params(user_id: str, scope: dict, state: Any) -> tuple[str, int, frozenset[str] | None, bool] | None:
    """(user_id, k, media, exclude_seen) when the FastAPI route would accept exactly these, else None."""
    if len(user_id) > MAX_ID_LENGTH:
        return None
    keys = [(name.lower(), value) for name, value in scope["headers"] if name.lower() in _KEY_HEADERS]
    if len({name for name, _ in keys}) < len(keys):
        return None  # a repeated key header: the route reads the first of each, leave it to the route
    presented = [value.decode("latin-1") for _, value in keys]
    if not state.keys.admits("read", presented):
        return None  # a page session, a missing or wrong key: the route answers (or refuses) it
    query: dict[str, str] = {}
    raw = scope.get("query_string", b"")
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else ():
        if name in query:
            return None  # repeated parameter
        query[name] = value
    k = 20
    if "k" in query:
        if not _K.match(query["k"]) or not 1 <= int(query["k"]) <= API_MAX_K:
            return None
        k = int(query["k"])
    exclude_seen = True
    if "exclude_seen" in query:
        if query["exclude_seen"] not in _BOOLS:
            return None
        exclude_seen = _BOOLS[query["exclude_seen"]]
    media = None
    if "media" in query:
        if len(query["media"]) > _MEDIA_MAX_LENGTH:
            return None
        try:
            media = parse_media(query["media"])
        except ServingError:
            return None
    try:
        check_k(k, state)
    except ServingError:
        return None
    return user_id, k, media, exclude_seen
