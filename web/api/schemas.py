"""The JSON API's request and response shapes, defined once as pydantic models.

The views validate requests with the input models (`web.validation.parse_body/parse_query`),
and `/api/openapi.json` is generated from all of them (`web.api.openapi`): a constraint, a
nullable field or an enum changed here changes both. The response models describe what the
serializers return; the suite checks every API response it produces against the document."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, StrictBool, StrictStr, WithJsonSchema

from schedules import bounds
from web.validation import MOMENT_RANGE, MomentError, parse_moment

RunStatusName = Literal["pending", "running", "succeeded", "failed", "cancelled", "debounced", "batched", "waiting",
                        "skipped"]
StageStatusName = Literal["pending", "running", "retrying", "throttled", "succeeded", "failed", "cancelled", "waiting"]
CatchUp = Literal["coalesce", "all", "none"]
Overlap = Literal["allow", "skip", "buffer_one"]
WebhookEventType = Literal["run.succeeded", "run.failed", "run.cancelled"]


def _moment_type(naive: str, description: str) -> Any:
    def validate(value: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_moment(value, naive=naive)
        except MomentError as exc:
            raise ValueError(str(exc)) from None

    return Annotated[
        datetime,
        PlainValidator(validate),
        PlainSerializer(lambda moment: moment.isoformat(), return_type=str),
        WithJsonSchema({"type": "string", "format": "date-time", "description": description}),
    ]


# A date-time with a UTC offset (one without is refused).
AwareMoment = _moment_type("refuse", f"ISO 8601 with a UTC offset, {MOMENT_RANGE}")
# A date-time; without an offset it is read in UTC.
UtcMoment = _moment_type("utc", f"ISO 8601; no offset means UTC; {MOMENT_RANGE}")
# A date-time; without an offset it is read in the schedule's `timezone`.
LocalMoment = _moment_type("keep", f"ISO 8601; no offset means the schedule's `timezone`; {MOMENT_RANGE}")
# Output: what the serializers write.
Moment = Annotated[datetime, WithJsonSchema({"type": "string", "format": "date-time"})]

NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class _Input(BaseModel):
    """Request bodies and query parameters: unknown names are refused. In bodies a value of the
    wrong JSON type is refused (a string is not a number, 1 is not true); query parameters are
    text, read as the type their field declares."""

    model_config = ConfigDict(extra="forbid")


class _Output(BaseModel):
    """Response bodies: every field listed is always present (null where the type allows it)."""

    model_config = ConfigDict(json_schema_mode_override="serialization")


# ---- errors -------------------------------------------------------------------------------------

class FieldError(_Output):
    field: str
    message: str


class Error(BaseModel):
    """Every 4xx and 503 answer of the API is this JSON object."""

    error: str = Field(description="what is wrong, in one sentence")
    field: str | None = Field(None, description="the field or parameter at fault (a dotted path into the body), "
                                                "when there is one")
    fields: list[FieldError] | None = Field(None, description="an invalid event payload: each bad field and what is "
                                                              "wrong with it")
    type: str | None = Field(None, description="the event type, on an event refused for its type or payload")
    store: str | None = Field(None, description="`unavailable` on a 503: the run store's database could not be "
                                                "reached, nothing was recorded")
    retry_after_seconds: int | None = Field(None, description="on a 503: when to try again (also `Retry-After`)")


# ---- events and runs ----------------------------------------------------------------------------

class EventInput(_Input):
    type: Annotated[NonEmpty, Field(max_length=200, examples=["order.placed"])]
    payload: dict[str, Any] = Field(description="validated against the event type's schema; at most 63 levels deep "
                                                "(the body: 64) and PIPELINE_MAX_PAYLOAD_BYTES (256 KiB)")
    idempotency_key: Annotated[NonEmpty, Field(max_length=255)] | None = Field(
        None, description="a second event with the same key is not stored again (an empty key is refused: leave it "
                          "out or send null for none)")
    priority: Literal["urgent"] | None = Field(
        None, description="`urgent`: the runs' stage messages overtake queued normal ones (leave it out or send "
                          "null for normal)")


class EventAccepted(_Output):
    event_id: UUID
    trace_id: str | None


class Stage(_Output):
    stage: str
    status: StageStatusName
    attempts: int
    enqueued_at: Moment | None
    started_at: Moment | None
    finished_at: Moment | None
    duration_ms: float | None
    result: Any = Field(description="what the stage returned (JSON), or null")
    error: str | None
    attempt_log: list[dict[str, Any]] = Field(description="one entry per failed attempt: attempt, error_type, error, "
                                                          "finished_at, duration_ms")


class RunSummary(_Output):
    run_id: UUID
    pipeline: str
    status: RunStatusName
    trigger: str = Field(description="event, schedule:<name>@<fire time>, replay:<run id>")
    event_id: UUID
    created_at: Moment | None
    started_at: Moment | None
    finished_at: Moment | None
    duration_ms: float | None
    error: str | None
    replay_of: UUID | None


class RunListItem(RunSummary):
    event_type: str


class WaitReason(_Output):
    rule: str = Field(description="the flow-control rule it waits on: concurrency")
    stage: str | None = Field(description="the stage that waits (a stage's own limit), or null: the whole run")
    key: str = Field(description="its key's value (\"*\": the pipeline's one global key)")
    key_field: str | None = Field(description="the key's path in the event payload")
    limit: int | None = Field(description="runs in progress allowed per key")
    total: int | None = Field(description="runs in progress allowed across all keys, or null")
    in_progress: list[UUID] = Field(description="the runs holding the key's slots now (at most 20)")
    ahead: int = Field(description="runs of the same key waiting ahead of this one")
    since: Moment


class Run(RunSummary):
    trace_id: str
    stages: list[Stage]
    waiting_for: WaitReason | None = Field(description="why a `waiting` run waits (flow control); null otherwise")


class RunPage(_Output):
    runs: list[RunListItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")
    filters: dict[str, str] = Field(description="the filters applied")


class Event(_Output):
    event_id: UUID
    type: str
    version: int
    payload: dict[str, Any] = Field(description="values under secret-looking keys are redacted")
    occurred_at: Moment | None
    trace_id: str
    idempotency_key: str | None
    source: str
    priority: Literal["urgent"] | None = Field(description="`urgent` when the event was emitted so")
    published_at: Moment | None
    runs: list[RunSummary]


class RunListQuery(_Input):
    """`GET /api/runs`: every parameter optional; an empty value is refused (leave it out)."""

    pipeline: Annotated[str, Field(min_length=1, max_length=200, description="only runs of this pipeline")] | None = None
    status: RunStatusName | None = Field(None, description="only runs in this status")
    event_type: Annotated[str, Field(min_length=1, max_length=200,
                                     description="only runs started by events of this type")] | None = None
    since: UtcMoment | None = Field(None, description="only runs created at or after this moment")
    until: UtcMoment | None = Field(None, description="only runs created before this moment")
    range: Literal["15m", "1h", "24h", "7d", "30d"] | None = Field(
        None, description="only runs of the last 15 minutes, hour, day, week or 30 days (instead of since)")
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="a run id, an event id or a trace id (32 hex digits, or a whole traceparent)")
    limit: Annotated[int, Field(ge=1, le=200)] = Field(50, description="runs per page")
    cursor: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] | None = Field(
        None, description="the `next_cursor` of the previous page; a cursor this API did not return is refused (400)")


class ReplayInput(_Input):
    from_start: StrictBool = Field(False, description="start a new run of the same event")


class ReplayAccepted(_Output):
    run_id: UUID = Field(description="the run that now makes progress (a new one with from_start)")
    replay_of: UUID


class CancelAccepted(_Output):
    run_id: UUID
    status: Literal["cancelled"]


# ---- webhooks -----------------------------------------------------------------------------------

class WebhookInput(_Input):
    name: Annotated[NonEmpty, Field(max_length=200)]
    url: NonEmpty = Field(description="an http:// or https:// URL")
    secret: Annotated[NonEmpty, Field(min_length=16, max_length=256, description="the HMAC-SHA256 key")]
    event_types: list[WebhookEventType] = Field(default=["run.succeeded", "run.failed", "run.cancelled"], min_length=1)
    pipelines: list[StrictStr] = Field(default=[], description="only these pipelines' outcomes (empty: all)")
    active: StrictBool = True
    max_consecutive_failures: Annotated[int, Field(ge=1, le=1000, strict=True)] = 5
    max_attempts: Annotated[int, Field(ge=1, le=6, strict=True)] = 6


class Webhook(_Output):
    id: int
    name: str
    url: str
    event_types: list[str]
    pipelines: list[str]
    active: bool
    consecutive_failures: int
    max_consecutive_failures: int
    max_attempts: int
    disabled_at: Moment | None
    disabled_reason: str | None
    created_at: Moment


class WebhookList(_Output):
    webhooks: list[Webhook]


# ---- schedules ----------------------------------------------------------------------------------

_INTERVAL = Field(ge=bounds.MIN_INTERVAL_SECONDS, le=bounds.MAX_INTERVAL_SECONDS, allow_inf_nan=False, strict=True)


class ScheduleChange(_Input):
    """The fields of a schedule; PATCH and PUT send the ones to change (null clears cron,
    interval_seconds, run_at, pipeline or actor, to switch to another kind or target)."""

    name: Annotated[StrictStr, Field(pattern=bounds.NAME_PATTERN)] | None = Field(
        None, description="on PATCH/PUT, if given, the name in the path (schedules cannot be renamed)")
    pipeline: Annotated[NonEmpty, Field(max_length=200)] | None = Field(
        None, description="the pipeline each fire starts (or `actor`)")
    actor: Annotated[NonEmpty, Field(max_length=200)] | None = Field(
        None, description="a Dramatiq actor each fire sends a message to (or `pipeline`)")
    payload: dict[str, Any] = Field(default={}, description="the event payload (pipeline) or keyword arguments (actor)")
    cron: Annotated[NonEmpty, Field(max_length=200)] | None = Field(
        None, description="five-field cron expression, read in `timezone`; one that never fires is refused",
        examples=["30 2 * * *"])
    timezone: Annotated[NonEmpty, Field(max_length=64)] = Field("UTC", examples=["Europe/Paris"])
    interval_seconds: Annotated[float, _INTERVAL] | None = Field(None, description="fire every this many seconds")
    run_at: LocalMoment | None = Field(None, description="fire once, at this moment")
    misfire_grace_seconds: Annotated[int, Field(ge=0, le=bounds.MAX_MISFIRE_GRACE_SECONDS, strict=True)] = 60
    catch_up: CatchUp = Field("coalesce", description="fires missed while no scheduler ran: one, each, or none")
    catch_up_window_seconds: Annotated[int, Field(ge=0, le=bounds.MAX_CATCH_UP_WINDOW_SECONDS, strict=True)] = 3600
    overlap: Overlap = Field("allow", description="what a fire does while the previous run is still active")
    jitter_seconds: Annotated[float, Field(ge=0, le=bounds.MAX_JITTER_SECONDS, allow_inf_nan=False, strict=True)] = 0
    paused: StrictBool = False


class ScheduleInput(ScheduleChange):
    """A new schedule: `cron` (+ `timezone`), `interval_seconds` or `run_at`; `pipeline` or `actor`."""

    name: Annotated[StrictStr, Field(pattern=bounds.NAME_PATTERN)]


class Schedule(_Output):
    name: str
    source: Literal["code", "runtime"]
    pipeline: str | None
    actor: str | None
    payload: dict[str, Any]
    cron: str | None
    timezone: str
    interval_seconds: float | None
    run_at: Moment | None
    misfire_grace_seconds: int
    catch_up: CatchUp
    catch_up_window_seconds: int
    overlap: Overlap
    jitter_seconds: float
    paused: bool
    next_fire_at: Moment | None
    last_fire_at: Moment | None
    last_run_id: UUID | None
    last_run_status: RunStatusName | None


class ScheduleList(_Output):
    schedules: list[Schedule]


class ScheduleDeleted(_Output):
    deleted: str


class ScheduleTriggered(_Output):
    schedule: str
    event_id: UUID | None = Field(None, description="a pipeline schedule: the event it emitted")
    run_id: UUID | None = Field(None, description="a pipeline schedule: the run it started")
    message_id: str | None = Field(None, description="an actor schedule: the message it sent")


class BackfillInput(_Input):
    start: AwareMoment
    end: AwareMoment = Field(description=f"at or after start; the range may hold at most {bounds.MAX_BACKFILL} "
                                         "fire times (more is refused: backfill it in parts)")


class BackfillAccepted(_Output):
    schedule: str
    fire_times: int
    runs_started: int


INPUT_MODELS: tuple[type[BaseModel], ...] = (EventInput, ReplayInput, WebhookInput, ScheduleInput, ScheduleChange,
                                             BackfillInput)
OUTPUT_MODELS: tuple[type[BaseModel], ...] = (
    Error, EventAccepted, Event, Run, RunPage, ReplayAccepted, CancelAccepted, Webhook, WebhookList, Schedule,
    ScheduleList, ScheduleDeleted, ScheduleTriggered, BackfillAccepted,
)
