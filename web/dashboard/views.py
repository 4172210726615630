"""The dashboard: server-rendered pages for staff, every action a POST form with its CSRF token."""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from pipeline import (
    ACTIVE_RUN_STATUSES,
    Event,
    OperationRefused,
    Run,
    RunNotFound,
    RunStatus,
    StageRun,
    StageStatus,
    cancel,
    event_schemas,
    redact,
    registry,
    replay,
    wait_reason,
    worker_offline_after,
)
from schedules import operations as schedule_ops
from schedules.models import ScheduleRecord
from schedules.registry import ScheduleError
from schedules.registry import schedules as declared
from web import run_queries as queries

from . import broker, graph, logs, workers

BULK_REPLAY_CAP = 200


def _choices() -> dict[str, Any]:
    event_types = sorted(set(event_schemas) | {p.event_type for p in registry.pipelines.values()})
    return {"pipelines": sorted(registry.pipelines), "statuses": RunStatus.values, "event_types": event_types,
            "ranges": list(queries.RANGES)}


def _with(params: dict[str, str], **extra: str) -> str:
    merged = {k: v for k, v in {**params, **extra}.items() if v}
    return "?" + urlencode(merged) if merged else "?"


def _get_run(run_id: str) -> Run:
    try:
        return Run.objects.select_related("event", "replay_of").get(id=uuid.UUID(run_id))
    except (ValueError, Run.DoesNotExist):
        raise Http404(f"no run with id {run_id!r}") from None


# --- overview -------------------------------------------------------------------------------------

@staff_member_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", "hour")
    if window not in queries.WINDOWS:
        window = "hour"
    data = queries.overview(window)
    queue_rows, broker_problem = broker.queue_stats()
    chart = {
        "labels": data["labels"],
        "series": data["series"],
        "bucket": data["bucket"],
        "rates": {"labels": [p["pipeline"] for p in data["pipelines"]],
                  "succeeded": [p["succeeded"] for p in data["pipelines"]],
                  "failed": [p["failed"] for p in data["pipelines"]]},
        "latency": {"labels": [f"{s['pipeline']}.{s['stage']}" for s in data["stages"]],
                    "p50": [s["p50_ms"] for s in data["stages"]], "p95": [s["p95_ms"] for s in data["stages"]]},
    }
    return render(request, "dashboard/overview.html", {
        "nav": "overview", "data": data, "window": window, "windows": list(queries.WINDOWS), "chart": chart,
        "queues": queue_rows, "broker_problem": broker_problem, "workers_online": workers.online_count(),
        "failed_recent": sum(p["failed"] for p in data["pipelines"]),
    })


# --- runs -----------------------------------------------------------------------------------------

def _filtered_page(request: HttpRequest, filters: "queries.RunFilters"):
    """The page of runs the request asks for (keyset cursor), the filter errors to show, and the
    capped count of matching runs."""
    query = queries.runs_queryset(filters)
    errors = list(filters.errors)
    try:
        page = queries.page_of(query, before=request.GET.get("before", ""), after=request.GET.get("after", ""))
    except queries.FilterError as exc:
        errors.append(str(exc))
        page = queries.page_of(query)
    count, more = queries.count_capped(query)
    return page, errors, count, more


@staff_member_required
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    filters = queries.RunFilters.from_params(request.GET, strict=False)
    page, errors, count, more = _filtered_page(request, filters)
    params = filters.as_params()
    context = {
        "nav": "runs", "page": page, "filters": filters, "errors": errors, "count": count, "count_more": more,
        "first_page": not request.GET.get("before") and not request.GET.get("after"),
        "older_url": _with(params, before=page.older) if page.older else None,
        "newer_url": _with(params, after=page.newer) if page.newer else None,
        "first_url": _with(params), "live_url": _with(params, partial="1"), **_choices(),
    }
    if request.GET.get("partial"):
        response = render(request, "dashboard/_run_rows.html", context)
        response["X-Run-Count"] = f"{count}{'+' if more else ''} run{'' if count == 1 and not more else 's'}"
        return response
    return render(request, "dashboard/runs.html", context)


@staff_member_required
@require_GET
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _get_run(run_id)
    rows = list(StageRun.objects.filter(run=run))
    by_name = {r.stage: r for r in rows}
    try:
        order = {name: i for i, name in enumerate(registry.get(run.pipeline).stages)}
    except Exception:
        order = {}
    rows.sort(key=lambda r: (order.get(r.stage, 1_000), r.id))
    for row in rows:
        row.attempts_shown = list(reversed(row.attempt_log or []))
    return render(request, "dashboard/run_detail.html", {
        "nav": "runs", "run": run, "stages": rows,
        "graph": graph.build_graph(run, by_name),
        "waterfall": graph.build_waterfall(run, rows),
        "payload": json.dumps(redact(run.event.payload), indent=2, sort_keys=True, default=str),
        "log": logs.run_log_lines(str(run.id)),
        "replays": list(run.replays.order_by("-created_at").only("id", "status", "created_at")[:20]),
        "active": run.status in ACTIVE_RUN_STATUSES,
        "replayable": run.status in (RunStatus.FAILED, RunStatus.CANCELLED),
        # Why it waits (flow control): the rule, the key, who holds the slots, how many wait ahead.
        "wait": (wait_reason(str(run.id)) if run.status == RunStatus.WAITING
                 or any(r.status == StageStatus.WAITING for r in rows) else None),
        "status_url": reverse("dashboard:run-status", args=[run.id]),
        "fingerprint": _fingerprint(run.status, [(r.stage, r.status, r.attempts) for r in rows]),
    })


@staff_member_required
@require_GET
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    """For the run page's live refresh: the run's and its stages' states, cheap to poll."""
    try:
        run = Run.objects.only("id", "status", "finished_at").get(id=uuid.UUID(run_id))
    except (ValueError, Run.DoesNotExist):
        return JsonResponse({"error": f"no run with id {run_id!r}"}, status=404)
    rows = list(StageRun.objects.filter(run=run).values_list("stage", "status", "attempts"))
    return JsonResponse({
        "run_id": str(run.id), "status": run.status, "active": run.status in ACTIVE_RUN_STATUSES,
        "stages": {stage: status for stage, status, _ in rows}, "fingerprint": _fingerprint(run.status, rows),
    })


def _fingerprint(status: str, rows: list[tuple[str, str, int]]) -> str:
    """Changes whenever the run page would show something new: a status or an attempt."""
    return status + "|" + ",".join(f"{stage}:{state}:{attempts}" for stage, state, attempts in sorted(rows))


def _back(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    return target if target.startswith(reverse("dashboard:overview")) else default  # wherever it is mounted


@staff_member_required
@require_POST
def run_replay(request: HttpRequest, run_id: str) -> HttpResponse:
    from_start = request.POST.get("from_start") == "1"
    try:
        new_id = replay(run_id, from_start=from_start)
    except RunNotFound:
        raise Http404(f"no run with id {run_id!r}") from None
    except OperationRefused as exc:
        messages.error(request, f"Not replayed: {exc}")
        return redirect("dashboard:run", run_id=run_id)
    if from_start:
        messages.success(request, f"Replaying from the start as a new run {new_id}.")
    else:
        messages.success(request, "Replaying from the stages that did not succeed.")
    return redirect("dashboard:run", run_id=new_id)


@staff_member_required
@require_POST
def run_cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        cancel(run_id)
    except RunNotFound:
        raise Http404(f"no run with id {run_id!r}") from None
    except OperationRefused as exc:
        messages.error(request, f"Not cancelled: {exc}")
    else:
        messages.success(request, "Cancelled: no further stage starts; a running stage sees ctx.cancelled.")
    return redirect("dashboard:run", run_id=run_id)


# --- events ---------------------------------------------------------------------------------------

EVENT_FIELDS = ("id", "type", "occurred_at", "trace_id", "source", "published_at", "idempotency_key")


@staff_member_required
@require_GET
def events(request: HttpRequest) -> HttpResponse:
    event_type = request.GET.get("type", "").strip()
    search = request.GET.get("q", "").strip()
    errors: list[str] = []
    query = Event.objects.all()
    if event_type:
        query = query.filter(type=event_type)
    if search:
        try:
            value = uuid.UUID(search.lower())
            query = query.filter(id=value) | query.filter(trace_id=value.hex)
        except ValueError:
            errors.append(f"search takes an event id or a trace id (32 hex digits), got {search!r}")
    try:
        page = queries.page_of(query, before=request.GET.get("before", ""), after=request.GET.get("after", ""),
                               fields=EVENT_FIELDS, time_field="occurred_at")
    except queries.FilterError as exc:
        errors.append(str(exc))
        page = queries.page_of(query, fields=EVENT_FIELDS, time_field="occurred_at")
    runs_by_event: dict[Any, list[Run]] = {}
    for run in Run.objects.filter(event_id__in=[e.id for e in page.rows]).only(
        "id", "event", "pipeline", "status", "created_at", "trigger"
    ).order_by("created_at"):
        runs_by_event.setdefault(run.event_id, []).append(run)
    for event in page.rows:
        event.run_list = runs_by_event.get(event.id, [])
    params = {"type": event_type, "q": search}
    return render(request, "dashboard/events.html", {
        "nav": "events", "page": page, "errors": errors, "type": event_type, "q": search, **_choices(),
        "older_url": _with(params, before=page.older) if page.older else None,
        "newer_url": _with(params, after=page.newer) if page.newer else None,
    })


@staff_member_required
@require_GET
def event_detail(request: HttpRequest, event_id: str) -> HttpResponse:
    try:
        event = Event.objects.get(id=uuid.UUID(event_id))
    except (ValueError, Event.DoesNotExist):
        raise Http404(f"no event with id {event_id!r}") from None
    return render(request, "dashboard/event_detail.html", {
        "nav": "events", "event": event,
        "payload": json.dumps(redact(event.payload), indent=2, sort_keys=True, default=str),
        "runs": list(event.runs.order_by("created_at")),
    })


# --- failed runs: replay in bulk -------------------------------------------------------------------

@staff_member_required
@require_GET
def failed(request: HttpRequest) -> HttpResponse:
    params = {k: v for k, v in request.GET.items() if k in ("pipeline", "event_type", "range", "since", "until")}
    filters = queries.RunFilters.from_params({**params, "status": RunStatus.FAILED}, strict=False)
    page, errors, count, more = _filtered_page(request, filters)
    shown = {k: v for k, v in filters.as_params().items() if k != "status"}
    return render(request, "dashboard/failed.html", {
        "nav": "failed", "page": page, "filters": filters, "errors": errors, "count": count, "count_more": more,
        "older_url": _with(shown, before=page.older) if page.older else None,
        "newer_url": _with(shown, after=page.newer) if page.newer else None,
        "here": request.get_full_path(), **_choices(),
    })


@staff_member_required
@require_POST
def failed_replay(request: HttpRequest) -> HttpResponse:
    run_ids = request.POST.getlist("run_id")
    back = _back(request, reverse("dashboard:failed"))
    if not run_ids:
        messages.error(request, "Select at least one run to replay.")
        return redirect(back)
    if len(run_ids) > BULK_REPLAY_CAP:
        messages.error(request, f"Replay at most {BULK_REPLAY_CAP} runs at once ({len(run_ids)} selected).")
        return redirect(back)
    from_start = request.POST.get("from_start") == "1"
    done, refused = [], []
    for run_id in run_ids:
        try:
            done.append(replay(run_id, from_start=from_start))
        except (RunNotFound, OperationRefused) as exc:
            refused.append(str(exc))
    if done:
        messages.success(request, f"Replaying {len(done)} run{'s' if len(done) != 1 else ''}.")
    for reason in refused[:10]:
        messages.error(request, f"Not replayed: {reason}")
    return redirect(back)


# --- workers --------------------------------------------------------------------------------------

@staff_member_required
@require_GET
def workers_page(request: HttpRequest) -> HttpResponse:
    rows = workers.worker_rows()
    return render(request, "dashboard/workers.html", {
        "nav": "workers", "rows": rows, "threshold": worker_offline_after(),
        "online": sum(1 for r in rows if r.state == "online"), "now": timezone.now(),
    })


# --- schedules ------------------------------------------------------------------------------------

def _schedule_records() -> list[Any]:
    """Every schedule's database record (the state the schedulers keep); schedules declared in code
    but not recorded yet (no scheduler has started since they were added) are recorded first."""
    if set(declared) - set(ScheduleRecord.objects.filter(name__in=list(declared)).values_list("name", flat=True)):
        schedule_ops.sync_code_schedules()
    return list(ScheduleRecord.objects.select_related("last_run").order_by("name"))


@staff_member_required
@require_GET
def schedules_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/schedules.html", {"nav": "schedules", "records": _schedule_records()})


@staff_member_required
@require_POST
def schedule_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    actions = {"pause": schedule_ops.pause, "resume": schedule_ops.resume, "trigger": schedule_ops.trigger_now}
    if action not in actions:
        raise Http404(f"unknown action {action!r}")
    try:
        result = actions[action](name)
    except schedule_ops.ScheduleNotFound:
        raise Http404(f"no schedule named {name!r}") from None
    except ScheduleError as exc:
        messages.error(request, f"{name}: {exc}")
        return redirect("dashboard:schedules")
    if action == "trigger":
        run_id = (result or {}).get("run_id")
        messages.success(request, f"{name}: triggered" + (f", run {run_id}" if run_id else "") + ".")
    else:
        messages.success(request, f"{name}: {'paused' if action == 'pause' else 'resumed'}.")
    return redirect("dashboard:schedules")
