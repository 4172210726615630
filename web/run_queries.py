"""The queries behind the runs list (dashboard and `GET /api/runs`) and the overview: one module
shared by the API and the dashboard.

Runs are listed newest first with keyset pagination on (created_at, id): a page costs the same
at the millionth run as at the first, and nothing counts the whole table (the total shown is
capped). Each filter has an index that serves it in `created_at` order (see the models' Meta and
`infra/query_bench.py`, which measures every combination on a million runs)."""
from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, Mapping

from django.db import connection
from django.db.models import CharField, Count, Q, QuerySet
from django.db.models.functions import Substr, TruncHour, TruncMinute
from django.utils import timezone

from pipeline import ACTIVE_RUN_STATUSES, Event, Run, RunStatus, StageRun, StageStatus, status_is
from web.validation import MomentError, parse_moment

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
COUNT_CAP = 10_000
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
          "7d": timedelta(days=7), "30d": timedelta(days=30)}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# What a list row needs: never the event's payload (up to 256 KiB each).
LIST_FIELDS = ("id", "pipeline", "status", "trigger", "created_at", "started_at", "finished_at", "duration_ms",
               "error", "replay_of", "event", "event_type")


class FilterError(ValueError):
    """A filter or cursor that cannot be understood; `field` names the parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_time(value: str, name: str) -> datetime:
    """ISO 8601, or the `datetime-local` form of a browser (`2026-11-26T06:00`); naive means UTC.
    Read by the web's one date-time parser: a date that does not exist (February 30, hour 25,
    offset +99:00) or one outside its range is a FilterError naming the parameter."""
    try:
        return parse_moment(value, naive="utc")
    except MomentError as exc:
        raise FilterError(f"parameter '{name}' {exc}", name) from None


@dataclass
class RunFilters:
    pipeline: str = ""
    status: str = ""
    event_type: str = ""
    range: str = ""
    since: datetime | None = None
    until: datetime | None = None
    q: str = ""
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, strict: bool = True, now: datetime | None = None) -> "RunFilters":
        """Reads query parameters; raises FilterError on the first bad one when `strict`, else
        drops it and keeps the message in `errors` (the HTML page shows it above the table)."""
        filters = cls()
        steps = (
            ("pipeline", lambda v: setattr(filters, "pipeline", v)),
            ("status", lambda v: setattr(filters, "status", _status(v))),
            ("event_type", lambda v: setattr(filters, "event_type", v)),
            ("range", lambda v: _range(filters, v, now or timezone.now())),
            ("since", lambda v: setattr(filters, "since", parse_time(v, "since"))),
            ("until", lambda v: setattr(filters, "until", parse_time(v, "until"))),
            ("q", lambda v: setattr(filters, "q", v)),
        )
        for name, apply in steps:
            value = (params.get(name) or "").strip()
            if not value:
                continue
            try:
                if "\x00" in value or len(value) > 200:
                    raise FilterError(f"parameter '{name}' must be at most 200 characters, without NUL", name)
                apply(value)
            except FilterError as exc:
                if strict:
                    raise
                filters.errors.append(str(exc))
        if filters.q:
            try:
                search_condition(filters.q)
            except FilterError as exc:
                if strict:
                    raise
                filters.errors.append(str(exc))
                filters.q = ""
        return filters

    def as_params(self) -> dict[str, str]:
        params = {"pipeline": self.pipeline, "status": self.status, "event_type": self.event_type, "q": self.q}
        if self.range:
            params["range"] = self.range
        else:
            params["since"] = self.since.isoformat() if self.since else ""
            params["until"] = self.until.isoformat() if self.until else ""
        return {k: v for k, v in params.items() if v}

    @property
    def active(self) -> bool:
        return bool(self.as_params())


def _status(value: str) -> str:
    if value not in RunStatus.values:
        raise FilterError(f"parameter 'status' must be one of {', '.join(RunStatus.values)}, got {value!r}", "status")
    return value


def _range(filters: RunFilters, value: str, now: datetime) -> None:
    if value not in RANGES:
        raise FilterError(f"parameter 'range' must be one of {', '.join(RANGES)}, got {value!r}", "range")
    filters.range = value
    filters.since = now - RANGES[value]


def search_condition(text: str) -> Q:
    """A run id, an event id or a trace id (32 hex digits, or a whole `traceparent`), resolved to
    conditions on indexed columns: the run's primary key, or its event's id."""
    value = text.strip().lower()
    match = _TRACEPARENT.match(value)
    if match:
        value = match.group(1)
    try:
        as_uuid = uuid.UUID(value)
    except ValueError:
        raise FilterError(f"search takes a run id, an event id or a trace id (32 hex digits), got {text!r}", "q") from None
    event_ids = list(
        Event.objects.filter(Q(id=as_uuid) | Q(trace_id=as_uuid.hex)).values_list("id", flat=True)[:1000]
    )
    return Q(id=as_uuid) | Q(event_id__in=event_ids)


def runs_queryset(filters: RunFilters) -> QuerySet:
    query = Run.objects.all()
    if filters.pipeline:
        query = query.filter(pipeline=filters.pipeline)
    if filters.status:
        query = query.filter(status_is(filters.status))
    if filters.event_type:
        query = query.filter(event_type=filters.event_type)  # a copy of the event's type, indexed
    if filters.since:
        query = query.filter(created_at__gte=filters.since)
    if filters.until:
        query = query.filter(created_at__lt=filters.until)
    if filters.q:
        query = query.filter(search_condition(filters.q))
    return query


def encode_cursor(row: Any, time_field: str = "created_at") -> str:
    moment = getattr(row, time_field) if not isinstance(row, dict) else row[time_field]
    row_id = row.id if not isinstance(row, dict) else row["id"]
    raw = f"{moment.isoformat()}|{uuid.UUID(str(row_id)).hex}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor of `encode_cursor` holds; anything else (a cursor crafted by hand,
    one holding a moment out of range) is a FilterError naming the parameter."""
    try:
        if len(cursor) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment_text, _, row_id = raw.partition("|")
        moment = parse_moment(moment_text, naive="refuse")
        return moment, uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError):  # MomentError and binascii.Error are ValueErrors
        raise FilterError(f"parameter '{name}' is not a cursor this list returned", name) from None


@dataclass
class Page:
    rows: list[Any]
    older: str | None  # cursor for the next (older) page
    newer: str | None  # cursor for the previous (newer) page


def page_of(query: QuerySet, *, before: str = "", after: str = "", limit: int = DEFAULT_PAGE_SIZE,
            fields: tuple[str, ...] | None = LIST_FIELDS, time_field: str = "created_at") -> Page:
    """One page of `query`, newest first by (`time_field`, id). `before` (a cursor) gives the
    page after it in the list (older rows), `after` the page before it (newer rows)."""
    if fields:
        query = query.only(*fields)
    t = time_field
    if after:
        moment, row_id = decode_cursor(after, "after")
        rows = list(
            query.filter(**{f"{t}__gte": moment}).exclude(**{t: moment, "id__lte": row_id})
            .order_by(t, "id")[: limit + 1]
        )
        has_newer = len(rows) > limit
        rows = rows[:limit][::-1]
        return Page(rows, encode_cursor(rows[-1], t) if rows else None,
                    encode_cursor(rows[0], t) if rows and has_newer else None)
    if before:
        moment, row_id = decode_cursor(before, "before")
        query = query.filter(**{f"{t}__lte": moment}).exclude(**{t: moment, "id__gte": row_id})
    rows = list(query.order_by(f"-{t}", "-id")[: limit + 1])
    has_older = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1], t) if rows and has_older else None,
                encode_cursor(rows[0], t) if rows and before else None)


def count_capped(query: QuerySet, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many rows match, counting at most `cap + 1` of them: (count, more than cap)."""
    n = query.order_by().values("created_at")[: cap + 1].count()  # created_at: read from the index alone
    return min(n, cap), n > cap


# --- the overview ------------------------------------------------------------------------------

WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
LATENCY_SAMPLE_CAP = 100_000


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * (len(sorted_values) - 1)))))
    return sorted_values[index]


def _bucket(window: str) -> Any:
    """The minute (or hour) a run was created in, computed by the database. SQLite keeps
    datetimes as UTC text ("2026-01-31 12:34:56.789"), whose prefix is the bucket: much cheaper
    than Django's TruncMinute there, a Python function called once per row."""
    if connection.vendor == "sqlite":
        return Substr("created_at", 1, 16 if window == "hour" else 13, output_field=CharField())
    return TruncMinute("created_at") if window == "hour" else TruncHour("created_at")


def _bucket_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        text = value + (":00" if len(value) == 16 else ":00:00")
        try:
            return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=dt_timezone.utc)
        except ValueError:
            return None
    return value


def overview(window: str, now: datetime | None = None) -> dict[str, Any]:
    """Runs per minute (per hour over a day), outcomes and stage latency per pipeline since
    `now - window`: each an aggregate the database computes over the `created_at` index."""
    now = now or timezone.now()
    span = WINDOWS[window]
    since = now - span
    recent = Run.objects.filter(created_at__gte=since)

    if window == "hour":
        step, label_format = timedelta(minutes=1), "%H:%M"
    else:
        step, label_format = timedelta(hours=1), "%d %H:00"
    first = since.replace(second=0, microsecond=0)
    if window == "day":
        first = first.replace(minute=0)
    buckets: list[datetime] = []
    moment = first
    while moment <= now:
        buckets.append(moment)
        moment += step
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, list[int]] = {s: [0] * len(buckets) for s in ("succeeded", "failed", "active", "cancelled")}
    outcomes: dict[str, dict[str, int]] = {}
    # One pass over the window's runs: counts per (bucket, pipeline, status), read from
    # run_recent_idx alone (COUNT(*), not COUNT(id): the id is not in that index).
    grouped = recent.annotate(bucket=_bucket(window)).values("bucket", "pipeline", "status").annotate(n=Count("*"))
    for row in grouped.order_by():
        per_pipeline = outcomes.setdefault(row["pipeline"], {})
        per_pipeline[row["status"]] = per_pipeline.get(row["status"], 0) + row["n"]
        i = index.get(_bucket_time(row["bucket"]))
        if i is None:
            continue
        # (flow control's skipped, debounced and batched runs never ran: counted with the cancelled ones)
        key = row["status"] if row["status"] in ("succeeded", "failed", "cancelled") else (
            "cancelled" if row["status"] in ("skipped", "debounced", "batched") else "active")
        series[key][i] += row["n"]
    minutes = span.total_seconds() / 60
    run_durations: dict[str, list[float]] = {}
    for pipeline, duration in (
        recent.filter(status=RunStatus.SUCCEEDED, duration_ms__isnull=False)
        .values_list("pipeline", "duration_ms")[:LATENCY_SAMPLE_CAP]
    ):
        run_durations.setdefault(pipeline, []).append(duration)
    pipelines = []
    for name in sorted(outcomes):
        counts = outcomes[name]
        total = sum(counts.values())
        finished = counts.get("succeeded", 0) + counts.get("failed", 0)
        durations = sorted(run_durations.get(name, []))
        pipelines.append({
            "pipeline": name,
            "total": total,
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
            "active": sum(counts.get(status, 0) for status in ACTIVE_RUN_STATUSES),
            "waiting": counts.get("waiting", 0),
            "skipped": counts.get("skipped", 0),
            "per_minute": round(total / minutes, 2),
            "success_rate": round(100 * counts.get("succeeded", 0) / finished, 1) if finished else None,
            "failure_rate": round(100 * counts.get("failed", 0) / finished, 1) if finished else None,
            "p50_ms": _percentile(durations, 0.5),
            "p95_ms": _percentile(durations, 0.95),
        })

    stage_durations: dict[tuple[str, str], list[float]] = {}
    for pipeline, stage, duration in (
        StageRun.objects.filter(run__created_at__gte=since, status=StageStatus.SUCCEEDED, duration_ms__isnull=False)
        .values_list("run__pipeline", "stage", "duration_ms")[:LATENCY_SAMPLE_CAP]
    ):
        stage_durations.setdefault((pipeline, stage), []).append(duration)
    stages = []
    for (pipeline, stage), values in sorted(stage_durations.items()):
        values.sort()
        stages.append({"pipeline": pipeline, "stage": stage, "count": len(values),
                       "p50_ms": round(_percentile(values, 0.5), 2), "p95_ms": round(_percentile(values, 0.95), 2)})

    return {
        "window": window,
        "since": since,
        "labels": [timezone.localtime(b).strftime(label_format) for b in buckets],
        "series": series,
        "bucket": "minute" if window == "hour" else "hour",
        "total": sum(sum(v) for v in series.values()),
        "pipelines": pipelines,
        "stages": stages,
    }
