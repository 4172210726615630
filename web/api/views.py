"""The machine API: post events, read events and runs."""
from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from pipeline import Event, EventError, OperationRefused, Run, RunNotFound, cancel, emit, replay
from web import run_queries as queries
from web.errors import error_response
from web.jsonbody import BadRequest, has_body
from web.validation import parse_body, parse_query

from . import schemas
from .auth import token_required
from .openapi import schema
from .serializers import event_json, run_json


def _not_found(kind: str, value: str) -> JsonResponse:
    return JsonResponse({"error": f"no {kind} with id {value!r}"}, status=404)


def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@token_required
@require_http_methods(["POST"])
def post_event(request: HttpRequest) -> JsonResponse:
    try:
        body = parse_body(request, schemas.EventInput)
        event_id = emit(body.type, body.payload, idempotency_key=body.idempotency_key, source="api",
                        priority=body.priority)
    except BadRequest as exc:
        return exc.response()
    except EventError as exc:
        return error_response(exc)
    trace_id = Event.objects.filter(id=event_id).values_list("trace_id", flat=True).first()
    return JsonResponse({"event_id": event_id, "trace_id": trace_id}, status=202)


@token_required
@require_http_methods(["GET"])
def get_event(request: HttpRequest, event_id: str) -> JsonResponse:
    event = Event.objects.filter(id=event_id).first() if _valid_uuid(event_id) else None
    if event is None:
        return _not_found("event", event_id)
    return JsonResponse(event_json(event))


@token_required
@require_http_methods(["GET"])
def get_run(request: HttpRequest, run_id: str) -> JsonResponse:
    run = Run.objects.filter(id=run_id).select_related("event").first() if _valid_uuid(run_id) else None
    if run is None:
        return _not_found("run", run_id)
    data = run_json(run)
    data["trace_id"] = run.event.trace_id
    return JsonResponse(data)


def _run_operation(run_id: str, operation) -> JsonResponse:
    try:
        result = operation()
    except (RunNotFound, OperationRefused) as exc:
        return error_response(exc)
    return JsonResponse(result, status=202)


@token_required
@require_http_methods(["POST"])
def replay_run(request: HttpRequest, run_id: str) -> JsonResponse:
    from_start = False
    if has_body(request):
        try:
            from_start = parse_body(request, schemas.ReplayInput).from_start
        except BadRequest as exc:
            return exc.response()
    return _run_operation(run_id, lambda: {"run_id": replay(run_id, from_start=from_start), "replay_of": run_id})


@token_required
@require_http_methods(["POST"])
def cancel_run(request: HttpRequest, run_id: str) -> JsonResponse:
    return _run_operation(run_id, lambda: (cancel(run_id), {"run_id": run_id, "status": "cancelled"})[1])


@token_required
@require_http_methods(["GET"])
def list_runs(request: HttpRequest) -> JsonResponse:
    """Runs newest first, filtered like the dashboard's list, a page at a time (`next_cursor`)."""
    try:
        query = parse_query(request.GET, schemas.RunListQuery)
        filters = queries.RunFilters.from_params(request.GET)
        page = queries.page_of(queries.runs_queryset(filters), before=query.cursor or "", limit=query.limit)
    except BadRequest as exc:
        return exc.response()
    except queries.FilterError as exc:
        field = "cursor" if exc.field == "before" else exc.field
        message = str(exc).replace("'before'", "'cursor'")
        return JsonResponse({"error": message, "field": field}, status=400)
    return JsonResponse({
        "runs": [{**run_json(run, with_stages=False), "event_type": run.event_type} for run in page.rows],
        "next_cursor": page.older,
        "filters": filters.as_params(),
    })


@csrf_exempt  # a public document: no cookie authority to protect, and a POST is a JSON 405, not a 403
@require_http_methods(["GET", "HEAD"])
def openapi_schema(request: HttpRequest) -> JsonResponse:
    """The OpenAPI 3.1 description of every /api endpoint; public, like any documentation. Its paths
    start with `/api/`; `servers` is where that `/api/` is mounted in this project (`web.routes`
    under a prefix of the project's choice), so the document's URLs are right under any prefix."""
    root = request.path.removesuffix("openapi.json")  # this view is `<root>openapi.json`
    mount = root.removesuffix("api/") if root.endswith("/api/") else root
    return JsonResponse(schema(request.build_absolute_uri(mount)))
