"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json.

Written by hand as a static dict, next to the views it describes: tests/test_dashboard_views.py
checks that every route under /api/ appears here with its methods, so the two cannot drift apart."""
from __future__ import annotations

import copy
from typing import Any

RUN_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"]
STAGE_STATUSES = ["pending", "running", "retrying", "succeeded", "failed", "cancelled"]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_ID = {"type": "string", "format": "uuid"}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema or {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or {"type": "string"}}


_SCHEDULE_NAME = _path_param("name", "the schedule's name")

SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "django-pipelines API",
        "version": "1",
        "description": (
            "Post events, follow and repair runs, operate schedules. Every endpoint but this schema needs "
            "`Authorization: Bearer <token>` (tokens are managed in the Django admin, under JSON API > API tokens; "
            "`make run` writes a development token to var/dev-api-token). Errors are JSON: "
            "`{\"error\": \"<what is wrong>\", \"field\": \"<the parameter at fault, when one is>\"}` with a 4xx status."
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"bearerToken": []}],
    "paths": {
        "/api/events": {
            "post": {
                "operationId": "postEvent",
                "summary": "Emit an event: it is stored with the runs it starts and published to the workers",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventInput"}}}},
                "responses": {
                    "202": {"description": "accepted: the event and its runs are stored; stages run on the workers",
                            "content": {"application/json": {"schema": {"type": "object", "required": ["event_id"], "properties": {
                                "event_id": _ID, "trace_id": {"type": "string"}}}}}},
                    "400": _error("a missing field, an unknown event type, or a payload that fails the event type's "
                                  "schema (each bad field named in `fields`)"),
                    "401": UNAUTHORIZED,
                    "413": _error("payload over PIPELINE_MAX_PAYLOAD_BYTES (256 KiB)"),
                    "415": _error("the body is not application/json"),
                },
            }
        },
        "/api/events/{event_id}": {
            "parameters": [_path_param("event_id", "the event's id", _ID)],
            "get": {
                "operationId": "getEvent",
                "summary": "An event (payload with secrets redacted) and the runs it started",
                "responses": {"200": _json("Event", "the event"), "401": UNAUTHORIZED, "404": _error("no such event")},
            },
        },
        "/api/runs": {
            "get": {
                "operationId": "listRuns",
                "summary": "Runs, newest first, filtered and paginated with a cursor",
                "parameters": [
                    _query("pipeline", "only runs of this pipeline"),
                    _query("status", "only runs in this status", {"type": "string", "enum": RUN_STATUSES}),
                    _query("event_type", "only runs started by events of this type"),
                    _query("since", "only runs created at or after this moment (ISO 8601; no offset means UTC)", {"type": "string", "format": "date-time"}),
                    _query("until", "only runs created before this moment (ISO 8601)", {"type": "string", "format": "date-time"}),
                    _query("range", "only runs of the last 15 minutes, hour, day, week or 30 days (instead of since)",
                           {"type": "string", "enum": ["15m", "1h", "24h", "7d", "30d"]}),
                    _query("q", "a run id, an event id or a trace id (32 hex digits, or a whole traceparent)"),
                    _query("limit", "runs per page, 1 to 200 (default 50)", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                    _query("cursor", "the `next_cursor` of the previous page"),
                ],
                "responses": {"200": _json("RunPage", "a page of runs"), "400": _error("an unknown or invalid parameter, named in `field`"),
                              "401": UNAUTHORIZED},
            }
        },
        "/api/runs/{run_id}": {
            "parameters": [_path_param("run_id", "the run's id", _ID)],
            "get": {
                "operationId": "getRun",
                "summary": "A run with its stages, every attempt's error kept",
                "responses": {"200": _json("Run", "the run"), "401": UNAUTHORIZED, "404": _error("no such run")},
            },
        },
        "/api/runs/{run_id}/replay": {
            "parameters": [_path_param("run_id", "the run's id", _ID)],
            "post": {
                "operationId": "replayRun",
                "summary": "Replay a failed or cancelled run from the stages that did not succeed, or from the start as a new run",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "from_start": {"type": "boolean", "default": False, "description": "start a new run of the same event"}}}}}},
                "responses": {
                    "202": {"description": "replaying", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "run_id": {**_ID, "description": "the run that now makes progress (a new one with from_start)"},
                        "replay_of": _ID}}}}},
                    "400": _error("from_start is not a boolean, or the body is malformed"),
                    "401": UNAUTHORIZED, "404": _error("no such run"),
                    "409": _error("the run is not failed or cancelled"),
                },
            },
        },
        "/api/runs/{run_id}/cancel": {
            "parameters": [_path_param("run_id", "the run's id", _ID)],
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel a pending or running run: no further stage starts, a running stage sees ctx.cancelled",
                "responses": {
                    "202": {"description": "cancelled", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "run_id": _ID, "status": {"const": "cancelled"}}}}}},
                    "401": UNAUTHORIZED, "404": _error("no such run"), "409": _error("the run has already finished"),
                },
            },
        },
        "/api/runs/{run_id}/events": {
            "parameters": [_path_param("run_id", "the run's id", _ID)],
            "get": {
                "operationId": "streamRunEvents",
                "summary": "The run's transitions as server-sent events, until the run ends; resumes after Last-Event-ID",
                "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                                "description": "the id of the last event received (`<count>|<key>`): the stream resumes after it"}],
                "responses": {
                    "200": {"description": "text/event-stream: events run.started, stage.started|retrying|succeeded|failed|cancelled, "
                                           "run.succeeded|failed|cancelled; data is JSON with key, type, at, stage, attempt, error",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "204": {"description": "the run has finished and the client has seen every transition"},
                    "401": UNAUTHORIZED, "404": _error("no such run"),
                },
            },
        },
        "/api/webhooks": {
            "get": {
                "operationId": "listWebhooks",
                "summary": "Webhook subscriptions (never their secrets)",
                "responses": {"200": {"description": "the subscriptions", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}}}}}},
                    "401": UNAUTHORIZED},
            },
            "post": {
                "operationId": "createWebhook",
                "summary": "Subscribe a URL to completion events, POSTed signed (X-Pipeline-Signature) with retries",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookInput"}}}},
                "responses": {"201": _json("Webhook", "created"), "400": _error("a bad field (non-http URL, short secret, …)"),
                              "401": UNAUTHORIZED, "409": _error("a webhook with that name exists")},
            },
        },
        "/api/webhooks/{webhook_id}": {
            "parameters": [_path_param("webhook_id", "the subscription's id", {"type": "integer"})],
            "get": {"operationId": "getWebhook", "summary": "One subscription",
                    "responses": {"200": _json("Webhook", "the subscription"), "401": UNAUTHORIZED, "404": _error("no such webhook")}},
            "delete": {"operationId": "deleteWebhook", "summary": "Delete a subscription",
                       "responses": {"204": {"description": "deleted"}, "401": UNAUTHORIZED, "404": _error("no such webhook")}},
        },
        "/api/schedules": {
            "get": {
                "operationId": "listSchedules",
                "summary": "Every schedule (declared in code or created here) with its state",
                "responses": {"200": {"description": "the schedules", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}}}}},
                    "401": UNAUTHORIZED},
            },
            "post": {
                "operationId": "createSchedule",
                "summary": "Create a schedule at run time: give `cron` (+ `timezone`) or `interval_seconds` (or `run_at`)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScheduleInput"}}}},
                "responses": {"201": _json("Schedule", "created"), "400": _error("an invalid or missing field, named in `field`"),
                              "401": UNAUTHORIZED, "409": _error("a schedule with this name already exists")},
            },
        },
        "/api/schedules/{name}": {
            "parameters": [_SCHEDULE_NAME],
            "get": {"operationId": "getSchedule", "summary": "One schedule and its state",
                    "responses": {"200": _json("Schedule", "the schedule"), "401": UNAUTHORIZED, "404": _error("no such schedule")}},
            "patch": {"operationId": "updateSchedule", "summary": "Change a schedule created at run time (a schedule declared in code: only `paused`)",
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScheduleInput"}}}},
                      "responses": {"200": _json("Schedule", "changed"), "400": _error("an invalid field"), "401": UNAUTHORIZED,
                                    "404": _error("no such schedule"), "409": _error("the schedule is declared in code")}},
            "put": {"operationId": "replaceSchedule", "summary": "Same as PATCH",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScheduleInput"}}}},
                    "responses": {"200": _json("Schedule", "changed"), "400": _error("an invalid field"), "401": UNAUTHORIZED,
                                  "404": _error("no such schedule"), "409": _error("the schedule is declared in code")}},
            "delete": {"operationId": "deleteSchedule", "summary": "Delete a schedule created at run time",
                       "responses": {"200": {"description": "deleted", "content": {"application/json": {"schema": {"type": "object", "properties": {"deleted": {"type": "string"}}}}}},
                                     "401": UNAUTHORIZED, "404": _error("no such schedule"), "409": _error("the schedule is declared in code")}},
        },
        "/api/schedules/{name}/pause": {
            "parameters": [_SCHEDULE_NAME],
            "post": {"operationId": "pauseSchedule", "summary": "Stop firing until resumed",
                     "responses": {"200": _json("Schedule", "paused"), "401": UNAUTHORIZED, "404": _error("no such schedule")}},
        },
        "/api/schedules/{name}/resume": {
            "parameters": [_SCHEDULE_NAME],
            "post": {"operationId": "resumeSchedule", "summary": "Fire again from now on (fires missed while paused are not caught up)",
                     "responses": {"200": _json("Schedule", "resumed"), "401": UNAUTHORIZED, "404": _error("no such schedule")}},
        },
        "/api/schedules/{name}/trigger": {
            "parameters": [_SCHEDULE_NAME],
            "post": {"operationId": "triggerSchedule", "summary": "Fire now, once, whatever the schedule's state",
                     "responses": {"202": {"description": "started", "content": {"application/json": {"schema": {"type": "object", "properties": {
                         "schedule": {"type": "string"}, "event_id": _ID, "run_id": _ID, "message_id": {"type": "string"}}}}}},
                         "401": UNAUTHORIZED, "404": _error("no such schedule")}},
        },
        "/api/schedules/{name}/backfill": {
            "parameters": [_SCHEDULE_NAME],
            "post": {"operationId": "backfillSchedule", "summary": "One run per fire time in [start, end] that has not run yet",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["start", "end"], "properties": {
                         "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}}}}},
                     "responses": {"202": {"description": "started", "content": {"application/json": {"schema": {"type": "object", "properties": {
                         "schedule": {"type": "string"}, "fire_times": {"type": "integer"}, "runs_started": {"type": "integer"}}}}}},
                         "400": _error("start or end missing or without a UTC offset, or too many fire times"),
                         "401": UNAUTHORIZED, "404": _error("no such schedule")}},
        },
        "/api/openapi.json": {
            "get": {"operationId": "openapi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "the OpenAPI description", "content": {"application/json": {"schema": {"type": "object"}}}}}},
        },
    },
    "components": {
        "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                            "description": "an API token from the Django admin (JSON API > API tokens)"}},
        "responses": {"Unauthorized": _error("no `Authorization: Bearer <token>` header, or an invalid or inactive token")},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string", "description": "what is wrong, in one sentence"},
                "field": {"type": "string", "description": "the field or parameter at fault, when there is one"},
                "fields": {"type": "array", "description": "an invalid event payload: each bad field and what is wrong with it",
                           "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}},
            "WebhookInput": {"type": "object", "required": ["name", "url", "secret"], "properties": {
                "name": {"type": "string", "maxLength": 200},
                "url": {"type": "string", "description": "an http:// or https:// URL"},
                "secret": {"type": "string", "minLength": 16, "maxLength": 256, "description": "the HMAC-SHA256 key"},
                "event_types": {"type": "array", "items": {"enum": ["run.succeeded", "run.failed", "run.cancelled"]}},
                "pipelines": {"type": "array", "items": {"type": "string"}, "description": "only these pipelines' outcomes (empty: all)"},
                "active": {"type": "boolean"},
                "max_consecutive_failures": {"type": "integer", "minimum": 1, "default": 5},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 6, "default": 6}}},
            "Webhook": {"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"}, "url": {"type": "string"},
                "event_types": {"type": "array", "items": {"type": "string"}}, "pipelines": {"type": "array", "items": {"type": "string"}},
                "active": {"type": "boolean"}, "consecutive_failures": {"type": "integer"},
                "max_consecutive_failures": {"type": "integer"}, "max_attempts": {"type": "integer"},
                "disabled_at": _TIME, "disabled_reason": {"type": ["string", "null"]}, "created_at": {"type": "string", "format": "date-time"}}},
            "EventInput": {"type": "object", "required": ["type", "payload"], "properties": {
                "type": {"type": "string", "examples": ["order.placed"]},
                "payload": {"type": "object", "description": "validated against the event type's schema"},
                "idempotency_key": {"type": "string", "maxLength": 255, "description": "a second event with the same key is not stored again"}}},
            "Stage": {"type": "object", "properties": {
                "stage": {"type": "string"}, "status": {"type": "string", "enum": STAGE_STATUSES},
                "attempts": {"type": "integer"}, "enqueued_at": _TIME, "started_at": _TIME, "finished_at": _TIME,
                "duration_ms": {"type": ["number", "null"]}, "result": {}, "error": {"type": ["string", "null"]},
                "attempt_log": {"type": "array", "items": {"type": "object", "properties": {
                    "attempt": {"type": "integer"}, "error_type": {"type": "string"}, "error": {"type": "string"},
                    "finished_at": {"type": "string", "format": "date-time"}, "duration_ms": {"type": "number"}}}}}},
            "RunSummary": {"type": "object", "properties": {
                "run_id": _ID, "pipeline": {"type": "string"}, "status": {"type": "string", "enum": RUN_STATUSES},
                "trigger": {"type": "string", "description": "event, schedule:<name>@<fire time>, replay:<run id>"},
                "event_id": _ID, "event_type": {"type": "string"}, "created_at": _TIME, "started_at": _TIME, "finished_at": _TIME,
                "duration_ms": {"type": ["number", "null"]}, "error": {"type": ["string", "null"]},
                "replay_of": {"type": ["string", "null"], "format": "uuid"}}},
            "Run": {"allOf": [{"$ref": "#/components/schemas/RunSummary"}, {"type": "object", "properties": {
                "trace_id": {"type": "string"}, "stages": {"type": "array", "items": {"$ref": "#/components/schemas/Stage"}}}}]},
            "RunPage": {"type": "object", "required": ["runs", "next_cursor"], "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunSummary"}},
                "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next (older) page; null on the last page"},
                "filters": {"type": "object", "description": "the filters applied"}}},
            "Event": {"type": "object", "properties": {
                "event_id": _ID, "type": {"type": "string"}, "version": {"type": "integer"},
                "payload": {"type": "object", "description": "values under secret-looking keys are redacted"},
                "occurred_at": _TIME, "trace_id": {"type": "string"}, "idempotency_key": {"type": ["string", "null"]},
                "source": {"type": "string"}, "published_at": _TIME,
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunSummary"}}}},
            "ScheduleInput": {"type": "object", "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"},
                "pipeline": {"type": "string", "description": "the pipeline each fire starts (or `actor`)"},
                "actor": {"type": "string", "description": "a Dramatiq actor each fire sends a message to (or `pipeline`)"},
                "payload": {"type": "object"},
                "cron": {"type": "string", "description": "five-field cron expression, read in `timezone`", "examples": ["30 2 * * *"]},
                "timezone": {"type": "string", "default": "UTC", "examples": ["Europe/Paris"]},
                "interval_seconds": {"type": "number", "exclusiveMinimum": 0},
                "run_at": {"type": "string", "format": "date-time", "description": "fire once, at this moment"},
                "misfire_grace_seconds": {"type": "integer", "default": 60},
                "catch_up": {"type": "string", "enum": ["coalesce", "all", "none"], "default": "coalesce",
                             "description": "fires missed while no scheduler ran: one, each, or none"},
                "catch_up_window_seconds": {"type": "integer", "default": 3600},
                "overlap": {"type": "string", "enum": ["allow", "skip", "buffer_one"], "default": "allow",
                            "description": "what a fire does while the previous run is still active"},
                "jitter_seconds": {"type": "number", "default": 0},
                "paused": {"type": "boolean", "default": False}}},
            "Schedule": {"allOf": [{"$ref": "#/components/schemas/ScheduleInput"}, {"type": "object", "properties": {
                "source": {"type": "string", "enum": ["code", "runtime"]},
                "next_fire_at": _TIME, "last_fire_at": _TIME,
                "last_run_id": {"type": ["string", "null"], "format": "uuid"},
                "last_run_status": {"type": ["string", "null"], "enum": [*RUN_STATUSES, None]}}}]},
        },
    },
}


def schema(base_url: str | None = None) -> dict[str, Any]:
    document = copy.deepcopy(SCHEMA)
    if base_url:
        document["servers"] = [{"url": base_url.rstrip("/") or "/"}]
    return document
