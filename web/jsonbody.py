"""Reading a JSON request body, with a precise 4xx for every way it can be wrong.

The one place the web parses request bodies (the API, the webhooks API, the shop's order
endpoint), so the limits below hold everywhere: what passes here can be stored in SQLite and
PostgreSQL and logged without an error further down.

- at most `MAX_JSON_DEPTH` (64) levels of arrays and objects, counting the body itself: deeper
  documents are refused here rather than failing in a recursive step later (redaction, the
  database's JSON functions, the logger);
- integers within the signed 64-bit range (what a database integer column holds; a 5,000-digit
  number would otherwise stop Python's int parser), finite numbers only (no `NaN`, `Infinity`,
  nor a literal such as 1e400 that only fits a float as infinity);
- strings and keys without lone UTF-16 surrogates (`"\\ud800"`: not encodable as UTF-8, so not
  storable or loggable) and without NUL characters (PostgreSQL text and jsonb refuse them).
"""
from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse

from pipeline import conf

MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_INT_DIGITS = 20  # longer digit strings cannot be in range: refused before int() reads them


class BadRequest(Exception):
    """A request the client must fix; `status` is the HTTP status, `extra` goes into the JSON body
    (`field`: the parameter or field at fault)."""

    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra

    def response(self) -> JsonResponse:
        return JsonResponse({"error": str(self), **self.extra}, status=self.status)


class _Unusable:
    """What the parser's hooks put in place of a number the limits refuse, so that the walk
    after parsing can name the field that holds it."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _parse_int(text: str) -> int | _Unusable:
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS or not INT64_MIN <= int(text) <= INT64_MAX:
        shown = text if len(text) <= 30 else f"{text[:12]}… ({len(digits)} digits)"
        return _Unusable(f"is an integer outside the signed 64-bit range ({shown})")
    return int(text)


def _parse_float(text: str) -> float | _Unusable:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Unusable(f"is a number too large to be stored ({text[:30]})")
    return value


def _parse_constant(name: str) -> _Unusable:
    return _Unusable(f"is {name}, which is not a JSON number (numbers must be finite)")


def _path(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts)


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    return None


def check_document(data: Any) -> None:
    """Raises BadRequest (naming the path of the value at fault in `field`) when `data` is nested
    deeper than MAX_JSON_DEPTH or holds a string or key that cannot be stored."""
    stack: list[tuple[Any, list[str | int], int]] = [(data, [], 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
                                 **({"field": str(path[0])} if path else {}))  # the top-level field holding it
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and (problem := _bad_text(key)):
                    raise BadRequest(f"a key {problem}", field=_path([*path, key.encode("utf-8", "replace").decode()]))
                stack.append((item, [*path, key], depth + 1))
        elif isinstance(value, _Unusable):
            where = _path(path)
            raise BadRequest(f"field {where!r} {value.problem}" if where else f"the body {value.problem}",
                             **({"field": where} if where else {}))
        elif isinstance(value, str) and (problem := _bad_text(value)):
            where = _path(path)
            raise BadRequest(f"field {where!r} {problem}" if where else f"the body {problem}",
                             **({"field": where} if where else {}))


def parse_json(raw: bytes | str) -> Any:
    """The JSON document in `raw`, within the limits above, or BadRequest (400)."""
    try:
        data = json.loads(raw or b"", parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # e.g. a number the parser cannot convert
        raise BadRequest(f"malformed JSON: {exc}") from None
    check_document(data)
    return data


def has_body(request: HttpRequest) -> bool:
    """Whether a request whose body is optional sent one: an empty form (what some clients, and
    Django's test client, send for a bare POST) counts as none."""
    if not request.body:
        return False
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return bool(request.POST or request.FILES)
    return True


def json_object(request: HttpRequest) -> dict[str, Any]:
    """The request's body as a JSON object: 415 when it is not declared JSON, 413 over the size
    limit, 400 when it is not a well-formed object within the limits above."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise BadRequest(f"expected Content-Type: application/json, got {content_type or 'none'!r}", status=415)
    limit = conf.get("PIPELINE_MAX_PAYLOAD_BYTES") + 4096
    if len(request.body) > limit:
        raise BadRequest(f"request body is {len(request.body)} bytes, over the limit of {limit} bytes", status=413)
    data = parse_json(request.body)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data
