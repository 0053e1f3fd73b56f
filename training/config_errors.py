"""Config errors a person can act on: one line per bad key, with the nearest valid key suggested.

pydantic's own message for a typo ("train.lrr  Extra inputs are not permitted ... visit
https://errors.pydantic.dev/...") names the problem but not the fix; this finds the section's
valid keys and suggests the closest (`did you mean 'lr'?`).
"""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the last element of `path` (None when not a model)."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        current = field.annotation
    return current


def describe_config_error(err: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: `train.lrr: unknown key; did you mean 'lr'? (valid: ...)` or pydantic's message."""
    lines = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        key = ".".join(str(p) for p in loc)
        if problem["type"] == "extra_forbidden":
            holder = _model_at(model, loc[:-1])
            valid = sorted(holder.model_fields) if holder is not None else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{key}: unknown key{hint} (valid keys: {', '.join(valid)})" if valid else f"{key}: unknown key")
        elif not loc:  # a check across keys (a model validator): its message names the keys, the input is the whole config
            lines.append(problem["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"{key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)
