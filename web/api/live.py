"""Live run updates for browsers (`GET /api/runs/<id>/events`, and the shop's order page through
`sse_response`): server-sent events derived from the run store.

No table of transitions is written (every extra write per transition would cost the engine
throughput): each poll re-derives a run's ordered list of transitions from `Run` and its
`StageRun` rows, and the stream sends those the client has not seen yet.

A transition's key is stable: `run:started`, `<stage>:<attempt>:<kind>` (kind: started,
retrying, succeeded, failed, cancelled), `run:<final status>`. The SSE `id` is
`<number delivered so far>|<key>`; a client reconnecting with `Last-Event-ID` resumes after that
key in the re-derived list (or, if the key is gone, after that many transitions). Timestamps are
written by the database's writers as transitions happen, so the list only grows at its end in
practice. The edge case: in a pipeline with parallel stages, a transition committed late with
an earlier timestamp than one already sent sorts before it, and a resume by key skips it (an
open stream never does: it remembers every key it has sent).

Each poll closes the request thread's database connection, so an idle stream holds none; a
comment line every 15 s keeps proxies from closing a quiet stream; the stream ends after the
run's final event (a client reconnecting to a finished run with nothing left gets 204, which
tells EventSource to stop). A stream may follow more than its run: the shop's adds the order's
own ending after the run's (`derive`). An open stream holds a server thread, so each web process
bounds how many it keeps open (`stream_limits`: 429 or 503 beyond)."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone

from pipeline import FINAL_RUN_STATUSES, Run, StageRun
from . import stream_limits
from .auth import token_required

Derive = Callable[[], "tuple[list[dict], str | None]"]

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 600.0  # then the stream ends and EventSource reconnects with Last-Event-ID
_RANK = {"run:started": 0, "started": 1, "retrying": 2, "succeeded": 2, "failed": 2, "cancelled": 2, "run:end": 3}


def _parse(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


SETTLE_SECONDS = 30.0


def derive_transitions(run_id: str) -> tuple[list[dict], str | None]:
    """(ordered transitions, state) of a run; ([], None) when there is no such run. The state is
    the run's status, or "ending" while a finished (cancelled) run still has a stage running:
    its end comes after the run's, and the stream waits for it (at most SETTLE_SECONDS)."""
    run = Run.objects.filter(id=run_id).values("status", "pipeline", "started_at", "finished_at", "created_at").first()
    if run is None:
        return [], None
    items: list[tuple[datetime, int, str, dict]] = []

    def add(key: str, kind: str, at: datetime | None, rank: int, **data: Any) -> None:
        at = at or run["started_at"] or run["created_at"]
        items.append((at, rank, key, {"key": key, "type": kind, "at": at.isoformat(), **data}))

    if run["started_at"] is not None:
        add("run:started", "run.started", run["started_at"], 0, pipeline=run["pipeline"])
    stages = list(StageRun.objects.filter(run_id=run_id).values(
        "stage", "status", "attempts", "started_at", "finished_at", "attempt_log", "error", "duration_ms"
    ).order_by("id"))
    for stage in stages:
        name, status, log = stage["stage"], stage["status"], stage["attempt_log"] or []
        for index, entry in enumerate(log):
            attempt = entry.get("attempt", index + 1)
            ended = _parse(entry.get("finished_at"))
            began = ended - timedelta(milliseconds=entry.get("duration_ms") or 0) if ended else None
            last_failure = index == len(log) - 1 and status in ("failed", "cancelled") and stage["attempts"] <= attempt
            kind = "failed" if last_failure and status == "failed" else "retrying"
            add(f"{name}:{attempt}:started", "stage.started", began, 1, stage=name, attempt=attempt)
            add(f"{name}:{attempt}:{kind}", f"stage.{kind}", ended, 2, stage=name, attempt=attempt,
                error=entry.get("error"))
        current = stage["attempts"]
        if current > len(log) and status in ("running", "succeeded", "cancelled"):
            add(f"{name}:{current}:started", "stage.started", stage["started_at"], 1, stage=name, attempt=current)
            if status in ("succeeded", "cancelled"):
                add(f"{name}:{current}:{status}", f"stage.{status}", stage["finished_at"] or stage["started_at"], 2,
                    stage=name, attempt=current, duration_ms=stage["duration_ms"])
    if run["started_at"] is None and items:
        # A stage was claimed between the two reads, before the run's own start was written (with
        # the same timestamp, just after): the run has started, and its key says so once.
        add("run:started", "run.started", min(item[0] for item in items), 0, pipeline=run["pipeline"])
    if run["status"] in FINAL_RUN_STATUSES:
        add(f"run:{run['status']}", f"run.{run['status']}", run["finished_at"], 3, pipeline=run["pipeline"],
            status=run["status"])
    items.sort(key=lambda item: (item[0], item[1], item[2]))
    state = run["status"]
    if state in FINAL_RUN_STATUSES and any(s["status"] == "running" for s in stages):
        finished = run["finished_at"]
        if finished is None or (timezone.now() - finished).total_seconds() < SETTLE_SECONDS:
            state = "ending"
    return [item[3] for item in items], state


def resume_position(transitions: list[dict], last_event_id: str | None) -> set[str]:
    """The keys a client that last saw `last_event_id` (`<count>|<key>`) has already received."""
    if not last_event_id:
        return set()
    count_text, _, key = last_event_id.partition("|")
    keys = [t["key"] for t in transitions]
    if key in keys:
        return set(keys[: keys.index(key) + 1])
    try:
        return set(keys[: max(0, int(count_text))])
    except ValueError:
        return set()


def _release_connection() -> None:
    if not connection.in_atomic_block:
        connection.close()


def event_stream(
    run_id: str,
    last_event_id: str | None = None,
    *,
    extra: Callable[[], dict] | None = None,
    derive: Derive | None = None,
    poll_seconds: float = POLL_SECONDS,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    max_seconds: float = MAX_STREAM_SECONDS,
) -> Iterator[str]:
    """The SSE text of one run's transitions, from after `last_event_id` to the run's end (or to
    the end of what `derive` follows: it returns (transitions, state) like `derive_transitions`)."""
    derive = derive or (lambda: derive_transitions(run_id))
    seen: set[str] | None = None
    count = 0
    if last_event_id:
        try:
            count = int(last_event_id.partition("|")[0])
        except ValueError:
            count = 0
    started = last_beat = time.monotonic()
    yield "retry: 1000\n\n"
    try:
        while True:
            transitions, status = derive()
            if seen is None:
                seen = resume_position(transitions, last_event_id)
            fresh = [t for t in transitions if t["key"] not in seen]
            payload = (extra() if extra and fresh else {})
            _release_connection()
            chunks = []
            for transition in fresh:
                count += 1
                seen.add(transition["key"])
                data = json.dumps({**transition, **payload, "run_id": str(run_id)})
                chunks.append(f"id: {count}|{transition['key']}\nevent: {transition['type']}\ndata: {data}\n\n")
            if chunks:
                yield "".join(chunks)
                last_beat = time.monotonic()
            if status is None or status in FINAL_RUN_STATUSES:
                return
            now = time.monotonic()
            if now - started > max_seconds:
                return
            if now - last_beat >= heartbeat_seconds:
                yield ": keep-alive\n\n"
                last_beat = now
            time.sleep(poll_seconds)
    finally:
        _release_connection()


def sse_response(request, run_id: str, *, extra: Callable[[], dict] | None = None,
                 derive: Derive | None = None) -> HttpResponse:
    """The stream of a run for this request, or 204 (finished and fully seen), or 429/503 (this
    client, or this process, has its maximum of open streams)."""
    slot = stream_limits.acquire(request)  # first: a refusal costs no query
    if not isinstance(slot, stream_limits.Slot):
        return slot
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        transitions, status = (derive or (lambda: derive_transitions(run_id)))()
    except BaseException:
        slot.release()
        raise
    finally:
        _release_connection()
    if status in FINAL_RUN_STATUSES and last_event_id and len(resume_position(transitions, last_event_id)) >= len(transitions):
        slot.release()
        return HttpResponse(status=204)  # finished and fully seen: EventSource stops reconnecting
    body = stream_limits.HeldStream(event_stream(run_id, last_event_id, extra=extra, derive=derive), slot)
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def api_run_events(request, run_id: str):
    """`GET /api/runs/<id>/events` (token auth): the run's transitions as server-sent events."""
    try:
        uuid.UUID(run_id)
    except ValueError:
        return JsonResponse({"error": f"no run with id {run_id!r}"}, status=404)
    if request.method != "GET":
        return JsonResponse({"error": "method not allowed"}, status=405)
    exists = Run.objects.filter(id=run_id).exists()
    _release_connection()
    if not exists:
        return JsonResponse({"error": f"no run with id {run_id!r}"}, status=404)
    return sse_response(request, run_id)


api_run_events_view = token_required(api_run_events)
