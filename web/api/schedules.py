"""The schedules part of the API: list, create, change, delete, pause, resume, trigger, backfill."""
from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods

from schedules import operations
from schedules.bounds import NAME_PATTERN
from schedules.models import ScheduleRecord
from schedules.registry import ScheduleError
from web.jsonbody import BadRequest
from web.validation import parse_body

from . import schemas
from .auth import token_required

_NAME = re.compile(NAME_PATTERN)


def schedule_json(record: ScheduleRecord) -> dict[str, Any]:
    iso = lambda v: v.isoformat() if v else None  # noqa: E731
    return {
        "name": record.name,
        "source": record.source,
        "pipeline": record.pipeline or None,
        "actor": record.actor or None,
        "payload": record.payload,
        "cron": record.cron or None,
        "timezone": record.timezone,
        "interval_seconds": record.interval_seconds,
        "run_at": iso(record.run_at),
        "misfire_grace_seconds": record.misfire_grace_seconds,
        "catch_up": record.catch_up,
        "catch_up_window_seconds": record.catch_up_window_seconds,
        "overlap": record.overlap,
        "jitter_seconds": record.jitter_seconds,
        "paused": record.paused,
        "next_fire_at": iso(record.next_fire_at),
        "last_fire_at": iso(record.last_fire_at),
        "last_run_id": str(record.last_run_id) if record.last_run_id else None,
        "last_run_status": record.last_run_status,
    }


def _error(exc: Exception, status: int = 400) -> JsonResponse:
    body = {"error": str(exc)}
    if getattr(exc, "field", None):
        body["field"] = exc.field
    return JsonResponse(body, status=status)


def _handle(operation):
    try:
        return operation()
    except operations.ScheduleNotFound as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    except ScheduleError as exc:
        return _error(exc, 409 if "declared in code" in str(exc) or "already exists" in str(exc) else 400)
    except BadRequest as exc:
        return exc.response()


def _known_name(name: str) -> str:
    """A name no schedule can have (a NUL, a slash, 300 characters) is a 404 before any query."""
    if not _NAME.match(name):
        raise operations.ScheduleNotFound(f"no schedule named {name[:120]!r}")
    return name


def _fields(body: schemas.ScheduleChange) -> dict[str, Any]:
    """The fields the client sent, as the schedules' operations take them."""
    return body.model_dump(exclude_unset=True)


@token_required
@require_http_methods(["GET", "POST"])
def schedules_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        records = ScheduleRecord.objects.select_related("last_run").order_by("name")
        return JsonResponse({"schedules": [schedule_json(r) for r in records]})
    return _handle(lambda: JsonResponse(
        schedule_json(operations.create(_fields(parse_body(request, schemas.ScheduleInput)))), status=201))


@token_required
@require_http_methods(["GET", "PATCH", "PUT", "DELETE"])
def schedule_item(request: HttpRequest, name: str) -> JsonResponse:
    if request.method == "GET":
        return _handle(lambda: JsonResponse(schedule_json(operations.get(_known_name(name)))))
    if request.method == "DELETE":
        return _handle(lambda: (operations.delete(_known_name(name)), JsonResponse({"deleted": name}))[1])

    def change() -> JsonResponse:
        _known_name(name)
        fields = _fields(parse_body(request, schemas.ScheduleChange))
        if fields.pop("name", name) != name:
            raise BadRequest("a schedule cannot be renamed: create one under the new name", field="name")
        return JsonResponse(schedule_json(operations.update(name, fields)))

    return _handle(change)


@token_required
@require_http_methods(["POST"])
def schedule_action(request: HttpRequest, name: str, action: str) -> JsonResponse:
    if action == "pause":
        return _handle(lambda: JsonResponse(schedule_json(operations.pause(_known_name(name)))))
    if action == "resume":
        return _handle(lambda: JsonResponse(schedule_json(operations.resume(_known_name(name)))))
    if action == "trigger":
        return _handle(lambda: JsonResponse({"schedule": name, **operations.trigger_now(_known_name(name))},
                                            status=202))
    if action == "backfill":
        def backfill() -> JsonResponse:
            _known_name(name)
            body = parse_body(request, schemas.BackfillInput)
            return JsonResponse({"schedule": name, **operations.backfill(name, body.start, body.end)}, status=202)

        return _handle(backfill)
    return JsonResponse({"error": f"unknown action {action[:60]!r} (pause, resume, trigger, backfill)"}, status=404)
