"""The one input-validation layer of the web: request bodies and query parameters are checked
against pydantic models (the same models `/api/openapi.json` is generated from), date-times are
read by one function with one range, and every refusal is a `BadRequest` (400) naming the field.

Bodies are parsed by `web.jsonbody` (depth, number and text limits); this module checks their
shape and values. Query parameters arrive as strings; an empty value is refused like any other
malformed one (leave a parameter out to leave it unset)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, TypeVar

from django.http import HttpRequest
from django.utils.dateparse import parse_datetime
from pydantic import BaseModel, ValidationError

from web.jsonbody import BadRequest, json_object

# Every date-time the web accepts lies in this range (in UTC): wide enough for any real
# timestamp, narrow enough that converting, storing and shifting one by a day cannot overflow.
MIN_MOMENT = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_MOMENT = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
MOMENT_RANGE = "from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z"

M = TypeVar("M", bound=BaseModel)


class MomentError(ValueError):
    """A date-time that cannot be read, or lies outside the accepted range."""


def parse_moment(value: Any, *, naive: str = "utc") -> datetime:
    """An ISO 8601 / RFC 3339 date-time (`T` or a space between date and time), aware.

    `naive` says what a value without a UTC offset means: "utc" (read as UTC), "keep" (returned
    naive, for a caller that reads it in another zone) or "refuse". Raises MomentError saying
    what is wrong: not a string, not a date-time (February 30, hour 25, offset +99:00, ...), or
    outside MOMENT_RANGE once converted to UTC."""
    if not isinstance(value, str):
        raise MomentError(f"must be an ISO 8601 date-time string, got {type(value).__name__}")
    text = value.strip()
    try:
        parsed = parse_datetime(text.replace(" ", "T", 1)) if text and "\x00" not in text else None
    except (ValueError, OverflowError) as exc:
        raise MomentError(f"{value[:60]!r} is not a valid date-time ({exc})") from None
    if parsed is None:
        raise MomentError(f"must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z, got {value[:60]!r}")
    if parsed.tzinfo is None:
        if naive == "refuse":
            raise MomentError(f"{value[:60]!r} needs a UTC offset, e.g. 2026-01-01T00:00:00+00:00")
        checked = parsed.replace(tzinfo=timezone.utc)
    else:
        checked = parsed
    try:
        in_utc = checked.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        in_utc = None
    if in_utc is None or not MIN_MOMENT <= in_utc <= MAX_MOMENT:
        raise MomentError(f"{value[:60]!r} is outside the accepted range ({MOMENT_RANGE})")
    if parsed.tzinfo is None and naive == "keep":
        return parsed
    return checked


_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "finite_number": "must be a finite number",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}


def _bounds(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, Any]:
    """The (ge, le) of a top-level numeric field, to say its whole range in one message."""
    info = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    low = high = None
    for item in getattr(info, "metadata", []) if info else []:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def _message(model: type[BaseModel], error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    low, high = _bounds(model, tuple(error["loc"]))
    if low is not None and high is not None and (kind in ("int_type", "int_parsing", "int_from_float", "float_type",
                                                          "float_parsing", "finite_number") or "ge" in ctx or "le" in ctx):
        noun = "an integer" if kind.startswith("int") or isinstance(low, int) and isinstance(high, int) else "a number"
        return f"must be {noun} from {low} to {high}"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    for bound, words in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most")):
        if bound in ctx:
            return f"must be {words} {ctx[bound]}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}"
    return error["msg"]


def bad_request(model: type[BaseModel], exc: ValidationError, *, kind: str = "field") -> BadRequest:
    """The first error of a pydantic validation as a 400 naming the field (a dotted path);
    unknown names are reported first, all of them."""
    errors = exc.errors(include_url=False)
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    first = extra[0] if extra else errors[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        names = sorted(".".join(str(p) for p in e["loc"]) for e in extra)
        where = "query parameter" if kind == "parameter" else kind
        return BadRequest(f"unknown {where}(s): {', '.join(names)}", field=names[0])
    return BadRequest(f"{kind} {field!r} {_message(model, first)}", **({"field": field} if field else {}))


def parse_body(request: HttpRequest, model: type[M]) -> M:
    """The request's JSON object body, checked against `model` (415, 413 or 400 otherwise)."""
    try:
        return model.model_validate(json_object(request))
    except ValidationError as exc:
        raise bad_request(model, exc) from None


def parse_query(params: Mapping[str, str], model: type[M]) -> M:
    """Query parameters checked against `model`: unknown names, empty and malformed values are 400."""
    values = {key: params[key] for key in params}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise bad_request(model, exc, kind="parameter") from None
