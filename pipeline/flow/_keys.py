"""Flow-control keys: a dotted path into the event payload (`"customer_id"`, `"customer.id"`)
naming what runs are grouped by; `None` is one group for every run (the global key `"*"`).

Kept this small on purpose: every flow rule (concurrency, singleton, rate limits, debounce,
batches) reads its key the same way, and checks it against the event's schema once every schema
is registered (`Registry.validate()`), so a typo fails at start-up."""
from __future__ import annotations

import typing

import pydantic

from ..errors import DefinitionError

GLOBAL_KEY = "*"


def check_key(expression: str, schema: type[pydantic.BaseModel] | None, where: str) -> None:
    """Raises `DefinitionError` naming `where` when `expression` is not a dotted path or one of
    its segments is not a field of `schema` (checked as deep as the fields are pydantic models;
    a schema that is None or allows extra fields accepts what it does not declare)."""
    if not isinstance(expression, str) or not expression or any(not part for part in expression.split(".")):
        raise DefinitionError(f"{where}: key {expression!r} must be a dotted path into the event payload, "
                              f"such as 'customer_id' or 'customer.id'")
    model: type[pydantic.BaseModel] | None = schema
    for segment in expression.split("."):
        if model is None:
            return
        fields = model.model_fields
        if segment not in fields:
            if model.model_config.get("extra") == "allow":
                return
            raise DefinitionError(f"{where}: key {expression!r}: {segment!r} is not a field of {model.__name__} "
                                  f"(fields: {', '.join(fields) or 'none'})")
        model = _model_in(fields[segment].annotation)


def _model_in(annotation: object) -> type[pydantic.BaseModel] | None:
    """The pydantic model a field holds (also inside Optional[...]), if any."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
            return candidate
    return None


def key_of(expression: str | None, payload: dict) -> str:
    """The key's value in `payload` as a string (`"*"` for a global key; `""` when the path is
    missing or null: an absent key is the empty key, so events without it share one key rather
    than failing; other values than strings as `str(value)`)."""
    if expression is None:
        return GLOBAL_KEY
    value: object = payload
    for segment in expression.split("."):
        if not isinstance(value, dict) or value.get(segment) is None:
            return ""
        value = value[segment]
    return value if isinstance(value, str) else str(value)
