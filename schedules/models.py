"""Schedules as the running schedulers see them (declared in code or created at run time), their
state (paused, next/last fire, last run), and the lease that makes one scheduler the leader."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from .bounds import check_bounds
from .registry import CATCH_UP_POLICIES, OVERLAP_POLICIES, Schedule, ScheduleError, check_target


class ScheduleRecord(models.Model):
    SOURCES = [("code", "declared in code"), ("runtime", "created at run time")]

    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=10, choices=SOURCES, default="runtime")
    pipeline = models.CharField(max_length=200, blank=True, default="")
    actor = models.CharField(max_length=200, blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.FloatField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    misfire_grace_seconds = models.PositiveIntegerField(default=60)
    catch_up = models.CharField(max_length=10, choices=[(p, p) for p in CATCH_UP_POLICIES], default="coalesce")
    catch_up_window_seconds = models.PositiveIntegerField(default=3600)
    overlap = models.CharField(max_length=10, choices=[(p, p) for p in OVERLAP_POLICIES], default="allow")
    jitter_seconds = models.FloatField(default=0)

    paused = models.BooleanField(default=False)
    # Fires before this moment are never caught up (set on creation and on resume).
    catch_up_from = models.DateTimeField(null=True, blank=True)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fire_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey("pipeline.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    buffered_fire_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "schedule"

    def __str__(self) -> str:
        return self.name

    DEFINITION_FIELDS = (
        "pipeline", "actor", "payload", "cron", "interval_seconds", "run_at", "timezone", "misfire_grace_seconds",
        "catch_up", "catch_up_window_seconds", "overlap", "jitter_seconds",
    )

    def spec(self) -> Schedule:
        return Schedule(
            name=self.name,
            pipeline=self.pipeline or None,
            actor=self.actor or None,
            payload=self.payload or {},
            interval_seconds=self.interval_seconds,
            cron=self.cron or None,
            run_at=self.run_at,
            timezone=self.timezone,
            misfire_grace_seconds=self.misfire_grace_seconds,
            catch_up=self.catch_up,
            catch_up_window_seconds=self.catch_up_window_seconds,
            overlap=self.overlap,
            jitter_seconds=self.jitter_seconds,
        )

    @staticmethod
    def fields_from_spec(spec: Schedule) -> dict[str, Any]:
        definition = spec.definition()
        fields = {name: definition[name] for name in ScheduleRecord.DEFINITION_FIELDS}
        fields["pipeline"] = fields["pipeline"] or ""
        fields["actor"] = fields["actor"] or ""
        fields["cron"] = fields["cron"] or ""
        return fields

    def clean(self) -> None:
        try:
            spec = check_bounds(self.spec())
            check_target(spec)
        except ScheduleError as exc:
            raise ValidationError({exc.field: str(exc)} if exc.field and exc.field != "name" else str(exc)) from None

    @property
    def last_run_status(self) -> str | None:
        return self.last_run.status if self.last_run_id and self.last_run else None


class SchedulerLease(models.Model):
    """One row: who leads, until when. The leader renews it every second; another scheduler
    takes it once it has expired."""

    name = models.CharField(max_length=50, unique=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} until {self.expires_at}"
