"""The schedules part of the API: list, create, change, delete, pause, resume, trigger, backfill."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods

from schedules import operations
from schedules.models import ScheduleRecord
from schedules.registry import ScheduleError
from web.jsonbody import BadRequest, json_object

from .auth import token_required


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


@token_required
@require_http_methods(["GET", "POST"])
def schedules_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        records = ScheduleRecord.objects.select_related("last_run").order_by("name")
        return JsonResponse({"schedules": [schedule_json(r) for r in records]})
    return _handle(lambda: JsonResponse(schedule_json(operations.create(json_object(request))), status=201))


@token_required
@require_http_methods(["GET", "PATCH", "PUT", "DELETE"])
def schedule_item(request: HttpRequest, name: str) -> JsonResponse:
    if request.method == "GET":
        return _handle(lambda: JsonResponse(schedule_json(operations.get(name))))
    if request.method == "DELETE":
        return _handle(lambda: (operations.delete(name), JsonResponse({"deleted": name}))[1])
    return _handle(lambda: JsonResponse(schedule_json(operations.update(name, json_object(request)))))


@token_required
@require_http_methods(["POST"])
def schedule_action(request: HttpRequest, name: str, action: str) -> JsonResponse:
    if action == "pause":
        return _handle(lambda: JsonResponse(schedule_json(operations.pause(name))))
    if action == "resume":
        return _handle(lambda: JsonResponse(schedule_json(operations.resume(name))))
    if action == "trigger":
        return _handle(lambda: JsonResponse({"schedule": name, **operations.trigger_now(name)}, status=202))
    if action == "backfill":
        def backfill():
            body = json_object(request)
            try:
                start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
            except KeyError as exc:
                raise BadRequest(f"field {exc.args[0]!r} is required (ISO 8601 date-time)", field=exc.args[0])
            except (TypeError, ValueError):
                raise BadRequest("start and end must be ISO 8601 date-times with a UTC offset", field="start")
            if start.tzinfo is None or end.tzinfo is None:
                raise BadRequest("start and end need a UTC offset, e.g. 2026-01-01T00:00:00+00:00", field="start")
            return JsonResponse({"schedule": name, **operations.backfill(name, start, end)}, status=202)

        return _handle(backfill)
    return JsonResponse({"error": f"unknown action {action!r} (pause, resume, trigger, backfill)"}, status=404)
