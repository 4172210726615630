"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json.

Generated from the pydantic models the views validate with (`web.api.schemas`) and the table of
operations below, which lists every status code and content type each view can answer: the
suite checks each API response it produces against this document, and a schema-driven fuzzer
(tests/web/test_openapi_fuzz.py) checks that no request gets an answer the document does not list."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schedules.bounds import NAME_PATTERN

from . import schemas

_REF = "#/components/schemas/{model}"
_JSON = "application/json"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    # status -> a response model, the description of an error (an `Error` body), or a ready
    # response object (no body, another content type)
    responses: dict[int, type[BaseModel] | str | dict[str, Any]]
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    public: bool = False
    extra_parameters: list[dict[str, Any]] = field(default_factory=list)


_BODY_ERRORS: dict[int, str] = {
    400: "the body is not a JSON object within the limits (64 levels deep, integers within 64 bits, finite "
         "numbers, no lone surrogate or NUL in a string), an unknown field, or a field with a wrong type or "
         "value (named in `field`)",
    413: "the body is over PIPELINE_MAX_PAYLOAD_BYTES (256 KiB) + 4 KiB",
    415: "the body is not declared as application/json",
}

_ID = {"type": "string", "format": "uuid"}
_SSE = {"description": "text/event-stream: events run.started, stage.started|retrying|succeeded|failed|cancelled, "
                       "run.succeeded|failed|cancelled; data is JSON with key, type, at, stage, attempt, error",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_STORE_DOWN = ("the run store's database cannot be reached: nothing was recorded; try again after `Retry-After` "
               "seconds (`store`: unavailable)")
WEBHOOK_ID_MAX = 10**18 - 1  # ids are matched as 1 to 18 digits; any other path segment is a 404

# PATCH and PUT of a schedule are the same operation (PUT for clients that only know it).
_SCHEDULE_CHANGE_ANSWERS: dict[int, type[BaseModel] | str | dict[str, Any]] = {
    200: schemas.Schedule, 400: "an invalid field, named in `field`", 404: "no such schedule",
    409: "the schedule is declared in code"}
_BAD_NEW_SCHEDULE = ("an invalid or missing field, named in `field` (values out of the documented ranges, a cron "
                     "expression that never fires, an unknown pipeline, actor or time zone, …)")
_BAD_BACKFILL_RANGE = ("start or end missing, without a UTC offset or out of range, end before start, or more than "
                       "10,000 fire times in the range")

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/api/events", "postEvent",
              "Emit an event: it is stored with the runs it starts and published to the workers",
              {202: schemas.EventAccepted,
               400: "a malformed body, an unknown event type, or a payload that fails the event type's schema (each "
                    "bad field named in `fields`)",
               413: "the body or the payload is over PIPELINE_MAX_PAYLOAD_BYTES (256 KiB)"},
              body=schemas.EventInput),
    Operation("get", "/api/events/{event_id}", "getEvent",
              "An event (payload with secrets redacted) and the runs it started",
              {200: schemas.Event, 404: "no such event (or an id that is not a UUID)"}),
    Operation("get", "/api/runs", "listRuns", "Runs, newest first, filtered and paginated with a cursor",
              {200: schemas.RunPage,
               400: "an unknown parameter, an empty one, or an invalid value (a date-time that does not exist or is "
                    "out of range, a cursor this API did not return), named in `field`"},
              query=schemas.RunListQuery),
    Operation("get", "/api/runs/{run_id}", "getRun", "A run with its stages, every attempt's error kept",
              {200: schemas.Run, 404: "no such run (or an id that is not a UUID)"}),
    Operation("post", "/api/runs/{run_id}/replay", "replayRun",
              "Replay a failed or cancelled run from the stages that did not succeed, or from the start as a new run",
              {202: schemas.ReplayAccepted, 404: "no such run", 409: "the run is not failed or cancelled"},
              body=schemas.ReplayInput, body_required=False),
    Operation("post", "/api/runs/{run_id}/cancel", "cancelRun",
              "Cancel a pending or running run: no further stage starts, a running stage sees ctx.cancelled",
              {202: schemas.CancelAccepted, 404: "no such run", 409: "the run has already finished"}),
    Operation("get", "/api/runs/{run_id}/events", "streamRunEvents",
              "The run's transitions as server-sent events, until the run ends; resumes after Last-Event-ID",
              {200: _SSE, 204: {"description": "the run has finished and the client has seen every transition"},
               404: "no such run",
               429: "this client (its token) already holds PIPELINE_SSE_MAX_STREAMS_PER_CLIENT streams on this web "
                    "process: retry after `Retry-After` seconds",
               503: "this web process already serves PIPELINE_SSE_MAX_STREAMS streams, or the run store's database "
                    "cannot be reached: retry after `Retry-After` seconds"},
              extra_parameters=[{"name": "Last-Event-ID", "in": "header", "required": False,
                                 "schema": {"type": "string"},
                                 "description": "the id of the last event received (`<count>|<key>`): the stream "
                                                "resumes after it"}]),
    Operation("get", "/api/webhooks", "listWebhooks", "Webhook subscriptions (never their secrets)",
              {200: schemas.WebhookList}),
    Operation("post", "/api/webhooks", "createWebhook",
              "Subscribe a URL to completion events, POSTed signed (X-Pipeline-Signature) with retries",
              {201: schemas.Webhook, 400: "a bad field (a URL that is not http(s), a short secret, …), named in "
                                          "`field`",
               409: "a webhook with that name exists"},
              body=schemas.WebhookInput),
    Operation("get", "/api/webhooks/{webhook_id}", "getWebhook", "One subscription",
              {200: schemas.Webhook, 404: "no such webhook"}),
    Operation("delete", "/api/webhooks/{webhook_id}", "deleteWebhook", "Delete a subscription",
              {204: {"description": "deleted"}, 404: "no such webhook"}),
    Operation("get", "/api/schedules", "listSchedules", "Every schedule (declared in code or created here) with its "
                                                        "state", {200: schemas.ScheduleList}),
    Operation("post", "/api/schedules", "createSchedule",
              "Create a schedule at run time: give `cron` (+ `timezone`) or `interval_seconds` (or `run_at`)",
              {201: schemas.Schedule, 400: _BAD_NEW_SCHEDULE, 409: "a schedule with this name already exists"},
              body=schemas.ScheduleInput),
    Operation("get", "/api/schedules/{name}", "getSchedule", "One schedule and its state",
              {200: schemas.Schedule, 404: "no such schedule"}),
    Operation("patch", "/api/schedules/{name}", "updateSchedule",
              "Change a schedule created at run time (a schedule declared in code: only `paused`)",
              _SCHEDULE_CHANGE_ANSWERS, body=schemas.ScheduleChange),
    Operation("put", "/api/schedules/{name}", "replaceSchedule", "Same as PATCH",
              _SCHEDULE_CHANGE_ANSWERS, body=schemas.ScheduleChange),
    Operation("delete", "/api/schedules/{name}", "deleteSchedule", "Delete a schedule created at run time",
              {200: schemas.ScheduleDeleted, 404: "no such schedule", 409: "the schedule is declared in code"}),
    Operation("post", "/api/schedules/{name}/pause", "pauseSchedule", "Stop firing until resumed",
              {200: schemas.Schedule, 404: "no such schedule"}),
    Operation("post", "/api/schedules/{name}/resume", "resumeSchedule",
              "Fire again from now on (fires missed while paused are not caught up)",
              {200: schemas.Schedule, 404: "no such schedule"}),
    Operation("post", "/api/schedules/{name}/trigger", "triggerSchedule", "Fire now, once, whatever the schedule's "
                                                                          "state",
              {202: schemas.ScheduleTriggered, 404: "no such schedule"}),
    Operation("post", "/api/schedules/{name}/backfill", "backfillSchedule",
              "One run per fire time in [start, end] that has not run yet",
              {202: schemas.BackfillAccepted, 400: _BAD_BACKFILL_RANGE, 404: "no such schedule"},
              body=schemas.BackfillInput),
    Operation("get", "/api/openapi.json", "openapi", "This document",
              {200: {"description": "the OpenAPI description", "content": {_JSON: {"schema": {"type": "object"}}}}},
              public=True),
)

_PATH_PARAMETERS = {
    "event_id": ("the event's id", _ID),
    "run_id": ("the run's id", _ID),
    "webhook_id": ("the subscription's id", {"type": "integer", "minimum": 0, "maximum": WEBHOOK_ID_MAX}),
    "name": ("the schedule's name (any other path segment is a 404)", {"type": "string", "pattern": NAME_PATTERN}),
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": _REF.format(model="Error")}}}}


def _response(status: int, spec: type[BaseModel] | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, str):
        return _error(spec)
    if isinstance(spec, dict):
        return spec
    return {"description": (spec.__doc__ or spec.__name__).strip().splitlines()[0],
            "content": {_JSON: {"schema": {"$ref": _REF.format(model=spec.__name__)}}}}


def _query_parameters(model: type[BaseModel], definitions: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    definitions.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        # A query parameter is absent or a string: `X | None` is just X, and "null" means nothing.
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            prop = {**branches[0], **{k: v for k, v in prop.items() if k != "default" or v is not None}}
            description = description or prop.pop("description", "")
        prop.pop("description", None)
        parameters.append({"name": name, "in": "query", "required": name in required, "description": description,
                           "schema": prop})
    return parameters


def _operation(op: Operation, definitions: dict[str, Any]) -> dict[str, Any]:
    responses: dict[int, Any] = dict(op.responses)
    if op.body is not None:
        for status, description in _BODY_ERRORS.items():
            responses.setdefault(status, description)
    if op.query is not None:
        responses.setdefault(400, "an invalid parameter, named in `field`")
    if not op.public:
        responses[401] = {"$ref": "#/components/responses/Unauthorized"}
        responses.setdefault(503, _STORE_DOWN)
        if op.method not in ("get", "head", "options"):
            responses.setdefault(403, "the token is read-only (scope `read`): writing needs a read-write token "
                                      "(`field`: scope)")
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "responses": {str(status): _response(status, spec) for status, spec in sorted(responses.items())},
    }
    if op.public:
        document["security"] = []
    parameters = [*op.extra_parameters]
    if op.query is not None:
        parameters.extend(_query_parameters(op.query, definitions))
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {"required": op.body_required, "content": {
            _JSON: {"schema": {"$ref": _REF.format(model=op.body.__name__)}}}}
    return document


@functools.cache
def _document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "validation") for m in schemas.INPUT_MODELS] + [(m, "serialization") for m in schemas.OUTPUT_MODELS],
        ref_template=_REF,
    )
    definitions: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item = paths.setdefault(op.path, {})
        parameters = [
            {"name": name, "in": "path", "required": True, "description": _PATH_PARAMETERS[name][0],
             "schema": _PATH_PARAMETERS[name][1]}
            for name in _PATH_PARAMETERS if "{" + name + "}" in op.path
        ]
        if parameters:
            item["parameters"] = parameters
        item[op.method] = _operation(op, definitions)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "django-pipelines API",
            "version": "1",
            "description": (
                "Post events, follow and repair runs, operate schedules. Every endpoint but this schema needs "
                "`Authorization: Bearer <token>` (tokens are managed in the Django admin, under JSON API > API "
                "tokens; `make run` writes a development token to var/dev-api-token). Every error is JSON: "
                "`{\"error\": \"<what is wrong>\", \"field\": \"<the parameter at fault, when one is>\"}` with a 4xx "
                "status; a method an endpoint does not take is a 405 with an `Allow` header, an unknown path a 404. "
                "Request bodies are JSON objects at most 64 levels deep, with integers within the signed 64-bit "
                "range, finite numbers and strings without lone surrogates or NUL characters."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                                "description": "an API token from the Django admin (JSON API > API "
                                                               "tokens)"}},
            "responses": {"Unauthorized": _error("no `Authorization: Bearer <token>` header, or an invalid, "
                                                 "inactive or expired token")},
            "schemas": definitions,
        },
    }


def schema(base_url: str | None = None) -> dict[str, Any]:
    """The document, with `servers` pointing at `base_url` when given."""
    document = copy.deepcopy(_document())
    if base_url:
        document["servers"] = [{"url": base_url.rstrip("/") or "/"}]
    return document
