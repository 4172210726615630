"""Every API response the suite produces is checked against /api/openapi.json.

`api_responses_match_the_document` (autouse, imported by conftest.py) wraps Django's test
client: each answer to a request under /api/ must have a status the document lists for that
operation, a content type it lists for that status, and a body its schema accepts; an answer
for a path or method the document does not list must be a JSON error (a 405 with `Allow`).
A mismatch fails the test that made the request, naming the operation and what differs."""
from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_BASE = "urn:pipelines:openapi"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """The document's operations, and a check of one response against them."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry = Registry().with_resource(_BASE, Resource.from_contents(document, DRAFT202012))
        # literal paths before templated ones, so /api/openapi.json never matches /api/runs/{run_id}
        self.paths = sorted(
            ((re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"), p) for p in document["paths"]),
            key=lambda item: item[1].count("{"),
        )

    def _resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.document
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            obj = node
        return obj

    def problems(self, method: str, path: str, status: int, headers: Any, body: bytes | None) -> list[str]:
        method = method.lower()
        if method == "head":
            body = None
        template = next((t for regex, t in self.paths if regex.match(path)), None)
        operation = self.document["paths"].get(template, {}).get(method) if template else None
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        if operation is None:
            found = []
            if content_type != "application/json" or "error" not in json.loads(body or b"{}"):
                found.append(f"{method.upper()} {path} (not in the document) answered {status} {content_type!r}, "
                             "not a JSON error")
            if status == 405 and not headers.get("Allow"):
                found.append(f"{method.upper()} {path} answered 405 without an Allow header")
            return found
        where = f"{operation['operationId']} ({method.upper()} {path})"
        responses = operation["responses"]
        documented = responses.get(str(status)) or responses.get("default")
        if documented is None:
            return [f"{where} answered {status}, which the document does not list ({', '.join(responses)})"]
        documented = self._resolve(documented)
        content = documented.get("content")
        if not content:
            return [f"{where} answered {status} with a body, documented without one"] if body else []
        if content_type not in content:
            return [f"{where} answered {status} as {content_type!r}; the document lists {', '.join(content)}"]
        if body is None or content_type != "application/json":
            return []
        pointer = _pointer("paths", template, method, "responses", str(status), "content", content_type, "schema")
        if "$ref" in responses.get(str(status), {}):
            pointer = responses[str(status)]["$ref"] + "/" + _pointer("content", content_type, "schema")[2:]
        validator = Draft202012Validator({"$ref": _BASE + pointer}, registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        return [f"{where} answered {status} with a body its schema refuses: {error.message} at "
                f"{'/'.join(map(str, error.absolute_path)) or 'the top'}"
                for error in list(validator.iter_errors(json.loads(body)))[:3]]


@cache
def contract() -> Contract:
    from web.api.openapi import schema

    return Contract(schema())


def check_response(method: str, path: str, response: Any) -> None:
    """Fails (AssertionError) when `response` to `method path` is not what the document says."""
    body = None if getattr(response, "streaming", False) else response.content
    found = contract().problems(method, path, response.status_code, response.headers, body)
    assert not found, "the API answered against its OpenAPI document:\n  " + "\n  ".join(found)


@pytest.fixture(autouse=True)
def api_responses_match_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.test import Client

    original = Client.request

    def request(self: Client, **environ: Any) -> Any:
        response = original(self, **environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith("/api/"):
            check_response(environ.get("REQUEST_METHOD", "GET"), path, response)
        return response

    monkeypatch.setattr(Client, "request", request)
