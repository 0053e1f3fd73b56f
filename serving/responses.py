"""Fast JSON bytes for the hot path: orjson when installed, the standard library otherwise.

Feed payloads are serialised once, cached as bytes and sent as-is, so serialisation speed only
matters on a miss; orjson is still preferred (several times faster), the fallback keeps the
server working where it is not installed.

The schema is still the contract: a payload sent as bytes is first validated by its response
model and what is serialised is that model's output (`schema_bytes`), so the bytes a fast route
sends are exactly what `response_model` documents in OpenAPI (an extra or missing field is a bug
caught at the source, not a silent contract change).
"""
from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

try:
    import orjson

    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS  # what the json fallback accepts, and numpy scalars

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=_OPTIONS)

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


def schema_bytes(schema: type[BaseModel], payload: dict[str, Any]) -> bytes:
    """`payload` validated by `schema`, serialised from the validated model (fields it sets only).

    Raises:
        pydantic.ValidationError: the payload does not satisfy the documented response schema.
    """
    # pydantic-core writes the JSON itself: validation + serialisation cost about what json.dumps alone does
    return schema.model_validate(payload).model_dump_json(exclude_unset=True).encode()
