"""Host header check: a browser tricked by DNS rebinding must not reach the server.

A page on `evil.example` can make its name resolve to 127.0.0.1 and then call a dev server on
loopback (open writes, open admin) from the visitor's browser; the only trace is the Host header,
which still says `evil.example`. So requests whose Host is not in `allowed_hosts` get a JSON 400
before any route runs. The default accepts the loopback names when the server listens on loopback
and any name otherwise (a public server sits behind names only its operator knows: set
RECSYS_SERVE_ALLOWED_HOSTS). Entries may be exact names or `*.example.com` suffixes.
"""
from __future__ import annotations

import logging
from typing import Any

from serving.responses import dumps

log = logging.getLogger(__name__)


def host_name(raw: str) -> str:
    """The name part of a Host header value: no port, lower case; IPv6 literals without brackets."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1:raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


class HostCheckMiddleware:
    """Pure ASGI middleware: 400 `invalid_host` unless the Host header names an allowed host."""

    def __init__(self, app: Any, allowed_hosts: list[str]):
        self.app = app
        self.any = "*" in allowed_hosts
        self.exact = {h for h in allowed_hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:] for h in allowed_hosts if h.startswith("*."))

    def allowed(self, name: str) -> bool:
        return self.any or name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        raw = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"host"), "")
        name = host_name(raw)
        if self.allowed(name):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        log.warning("refused request for host %r: %s %s from %s (RECSYS_SERVE_ALLOWED_HOSTS)", name[:100],
                    scope.get("method"), scope.get("path"), client[0])
        body = dumps({"code": "invalid_host", "message": f"host {name[:100]!r} is not served here; allowed: "
                      f"{', '.join(sorted(self.exact) + ['*' + s for s in self.suffixes])} (RECSYS_SERVE_ALLOWED_HOSTS)",
                      "details": []})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
