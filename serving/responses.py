"""Fast JSON bytes for the hot path: orjson when installed, the standard library otherwise.

Feed payloads are serialised once, cached as bytes and sent as-is, so serialisation speed only
matters on a miss; orjson is still preferred (several times faster), the fallback keeps the
server working where it is not installed.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    loads = json.loads


class JSONBytes(Response):
    """A response whose body is already JSON bytes (or is serialised with `dumps`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)
