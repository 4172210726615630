"""Key expressions of the flow-control declarations: a dotted path into the event payload
(`"customer_id"`, `"customer.id"`), or None for one global key. Checked against the event's
schema once every schema is registered (`Registry.validate()`), so a typo fails at start-up."""
from __future__ import annotations

from typing import Any

import pydantic

from ..errors import DefinitionError

GLOBAL_KEY = "*"


def check_key(expression: str, schema: type[pydantic.BaseModel] | None, where: str) -> None:
    """Raises DefinitionError naming `where` when a segment of `expression` is not a field of
    `schema` (nested models are followed); a schema that is None or allows extra fields accepts
    what it does not declare."""
    if not isinstance(expression, str) or not expression or any(not part for part in expression.split(".")):
        raise DefinitionError(f"{where}: key {expression!r} must be a dotted path into the payload, e.g. 'customer_id'")
    model: Any = schema
    for part in expression.split("."):
        if model is None or not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return
        fields = model.model_fields
        if part not in fields:
            if model.model_config.get("extra") == "allow":
                return
            raise DefinitionError(f"{where}: key {expression!r} names {part!r}, which is not a field of "
                                  f"{model.__name__} (fields: {', '.join(fields) or 'none'})")
        model = fields[part].annotation


def key_of(expression: str | None, payload: dict) -> str:
    """The key's value in `payload` as a string; "*" for a global key (None). A missing value
    is the string "None", so events without it share one key rather than failing."""
    if expression is None:
        return GLOBAL_KEY
    value: Any = payload
    for part in expression.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value)
