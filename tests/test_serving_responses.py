"""What a fast (bytes) route sends is what its pydantic response model documents."""
from __future__ import annotations

import json

import pydantic
import pytest

from serving.responses import schema_bytes
from serving.schemas import Recommendations

ITEM = {"item_id": "7", "media": ["image"], "score": 0.5}


def test_the_sent_bytes_are_the_validated_models_output() -> None:
    body = json.loads(schema_bytes(Recommendations, {"items": [ITEM, {**ITEM, "item_id": "8", "title": "t"}],
                                                     "model_version": "m", "variant": "A", "cold_start": False}))
    assert body == {"items": [ITEM, {**ITEM, "item_id": "8", "title": "t"}], "model_version": "m", "variant": "A",
                    "cold_start": False}


def test_a_payload_outside_the_schema_is_refused_not_sent() -> None:
    with pytest.raises(pydantic.ValidationError, match="cold_start"):
        schema_bytes(Recommendations, {"items": [ITEM], "model_version": "m", "variant": "A"})
    with pytest.raises(pydantic.ValidationError, match="score"):
        schema_bytes(Recommendations, {"items": [{**ITEM, "score": "high"}], "model_version": "m", "variant": "A",
                                       "cold_start": True})
