"""The run store: events (also the outbox), runs and stage runs.

Indexes follow the dashboard's and the relay's queries: recent runs per pipeline and status,
unpublished events, and stage runs waiting too long. The runs' status indexes are partial (runs
under way; runs that ended unsuccessfully): see pipeline/_status_index.py."""
from __future__ import annotations


from django.db import models
from django.db.models import Q

from ._ids import new_id
from ._status_index import ACTIVE_CONDITION, UNSUCCESSFUL_CONDITION
from ._statuses import ACTIVE_RUN_STATUSES, RunStatus, StageStatus  # noqa: F401  (re-exported)


class Event(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    type = models.CharField(max_length=200)  # indexed by event_type_recent_idx
    version = models.PositiveIntegerField(default=1)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(db_index=True)
    trace_id = models.CharField(max_length=32)  # indexed by event_trace_idx
    # The rest of the W3C trace context that came with the trace (pipeline._tracing): the flags as
    # received and `tracestate` unchanged.
    trace_flags = models.CharField(max_length=2, default="01", db_default="01")
    tracestate = models.TextField(blank=True, default="", db_default="")
    # A trace id received with the request that emitted this event but not trusted as its own
    # (PIPELINE_TRUSTED_TRACEPARENT, pipeline/request_context.py): kept as a link, like an OpenTelemetry link.
    linked_trace_id = models.CharField(max_length=32, null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # unique: event_idempotency_key
    source = models.CharField(max_length=255, blank=True, default="")
    # "urgent" when the emit asked for it (pipeline.flow._priority): kept so that a stage published
    # again later (the relay after an outage, a replay, a run released by flow control) stays urgent.
    priority = models.CharField(max_length=16, blank=True, default="", db_default="")
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(
                fields=["occurred_at"], name="event_unpublished_idx", condition=Q(published_at__isnull=True)
            ),
            models.Index(fields=["type", "-occurred_at"], name="event_type_recent_idx"),  # the events page
            models.Index(fields=["trace_id"], name="event_trace_idx"),
        ]
        # Declared here rather than with unique=True/db_index=True on the fields: on PostgreSQL those
        # add a second, LIKE-only index per column, which every emit pays for and no query uses.
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="event_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class RunManager(models.Manager):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        _fill_event_type(objs)
        return super().bulk_create(objs, *args, **kwargs)


def _fill_event_type(runs: list["Run"]) -> None:
    """`Run.event_type` copies the event's type, so the runs list filters by it on an index of
    its own instead of joining a million events (see web/run_queries.py)."""
    missing = [r for r in runs if not r.event_type]
    if not missing:
        return
    unknown = {r.event_id for r in missing if not Run.event.is_cached(r)}
    types = dict(Event.objects.filter(id__in=unknown).values_list("id", "type")) if unknown else {}
    for run in missing:
        run.event_type = run.event.type if Run.event.is_cached(run) else types.get(run.event_id, "")


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="runs")
    # The event's type, copied when the run is made (see RunManager): an indexed filter of the runs list.
    event_type = models.CharField(max_length=200, blank=True, default="", editable=False)
    pipeline = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=255, default="event")
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays",
                                  db_index=False)  # run_replays_idx: only the few replays are indexed
    created_at = models.DateTimeField()  # indexed by run_recent_idx
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # An event turns into at most one run per pipeline; a replay from the start is a new run.
            models.UniqueConstraint(
                fields=["event", "pipeline"], condition=Q(replay_of__isnull=True), name="run_once_per_event"
            ),
        ]
        indexes = [
            models.Index(fields=["pipeline", "-created_at"], name="run_pipeline_recent_idx"),
            # The dashboard's runs list: each filter and pair of filters read in created_at order;
            # the overview's counts and latencies over a time window read from run_recent_idx alone.
            models.Index(fields=["created_at", "pipeline", "status", "duration_ms"], name="run_recent_idx"),
            models.Index(fields=["event_type", "-created_at"], name="run_type_recent_idx"),
            # By status: partial, so that a run's steps do not move its entries from page to page
            # (pipeline/_status_index.py, which also writes the query term that lets them be used).
            models.Index(fields=["status", "-created_at", "pipeline"], name="run_active_idx",
                         condition=ACTIVE_CONDITION),
            models.Index(fields=["status", "-created_at"], name="run_unsuccessful_idx",
                         condition=UNSUCCESSFUL_CONDITION),
            models.Index(fields=["pipeline", "status", "-created_at"], name="run_pipeline_unsuccessful_idx",
                         condition=UNSUCCESSFUL_CONDITION),
            models.Index(fields=["event_type", "status", "-created_at"], name="run_type_unsuccessful_idx",
                         condition=UNSUCCESSFUL_CONDITION),
            models.Index(fields=["replay_of"], name="run_replays_idx", condition=Q(replay_of__isnull=False)),
        ]

    objects = RunManager()

    def __str__(self) -> str:
        return f"{self.pipeline} {self.id} ({self.status})"

    def save(self, *args, **kwargs):
        if not self.event_type:
            _fill_event_type([self])
        super().save(*args, **kwargs)


class StageRun(models.Model):
    # No index of its own: stage_once_per_run (run, stage) serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stages", db_index=False)
    stage = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=StageStatus.choices, default=StageStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    # Every attempt's outcome, error and traceback: kept as long as the run is.
    attempt_log = models.JSONField(default=list, blank=True)
    # Who holds the stage while it runs: the Dramatiq message id, until the lease ends.
    message_id = models.CharField(max_length=64, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    # A fan-in waits for this many more parents to succeed (each decrements it); 0 once ready.
    parents_remaining = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "stage"], name="stage_once_per_run")]
        indexes = [
            models.Index(
                fields=["enqueued_at"],
                name="stage_waiting_idx",
                condition=Q(status__in=["pending", "retrying", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stage} ({self.status})"


class FlowRate(models.Model):
    """One rate limit's state per key (pipeline/flow/_rate.py): `tat` is the generic cell rate
    algorithm's theoretical arrival time, `hint` the last turn handed to a waiting stage."""

    rule = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    tat = models.DateTimeField(null=True, blank=True)
    hint = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "key"], name="flowrate_once_per_key")]


class FlowWindow(models.Model):
    """An open debounce or batch window of one pipeline and key (pipeline/flow/_windows.py): the
    run that will carry it (`leader_run`), due at `due_at`; deleted when that run starts."""

    kind = models.CharField(max_length=16)  # debounce | batch
    pipeline = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    leader_run = models.UUIDField()
    leader_occurred_at = models.DateTimeField()
    opened_at = models.DateTimeField()  # the first event's occurred_at
    due_at = models.DateTimeField()
    size = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "pipeline", "key"], name="flowwindow_once_per_key")]


class FlowBatchItem(models.Model):
    """An event of a batch, for the run that carries the batch (its stages' `ctx.batch`)."""

    run_id = models.UUIDField(db_index=True)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+", db_index=False)
    occurred_at = models.DateTimeField()


class WorkerHeartbeat(models.Model):
    """One row per worker process, rewritten every few seconds by `pipeline.middleware.Heartbeat`:
    a worker whose `last_seen` is older than the dashboard's threshold shows as offline."""

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list, blank=True)
    in_flight = models.PositiveIntegerField(default=0)
    # The stages running right now, "<pipeline>.<stage>" (or the actor name), at most a few dozen.
    current = models.JSONField(default=list, blank=True)
    processed = models.PositiveBigIntegerField(default=0)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"worker {self.host}:{self.pid}"


# Flow control's tables (pipeline/flow/models.py), registered with this app.
from .flow.models import ConcurrencyCounter, ConcurrencySlot, ConcurrencyWaiter  # noqa: E402,F401
