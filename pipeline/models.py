"""The run store: events (also the outbox), runs and stage runs.

Indexes follow the dashboard's and the relay's queries: recent runs per pipeline and status,
unpublished events, and stage runs waiting too long."""
from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StageStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=200, db_index=True)
    version = models.PositiveIntegerField(default=1)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(db_index=True)
    trace_id = models.CharField(max_length=32, db_index=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    source = models.CharField(max_length=255, blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(
                fields=["occurred_at"], name="event_unpublished_idx", condition=Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="runs")
    pipeline = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=255, default="event")
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")
    created_at = models.DateTimeField(db_index=True)
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
            models.Index(fields=["status", "-created_at"], name="run_status_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} {self.id} ({self.status})"


class StageRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stages")
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
