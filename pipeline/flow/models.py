"""The run store's flow-control tables (app `pipeline`): per (pipeline, rule, key) a counter of
slots held, the slots themselves (which run holds one), and the waiting list.

Why a counter row beside the slot rows: taking a slot is one conditional upsert on it
(`held < limit`), which also orders racing processes on PostgreSQL (its row lock) and needs
nothing more on SQLite (one writer at a time). The slot rows say who holds what (a run's end
releases exactly its own, once); the waiting list keeps arrival order per key."""
from __future__ import annotations

from django.db import models


class ConcurrencyCounter(models.Model):
    pipeline = models.CharField(max_length=200)
    # concurrency, concurrency_total, singleton, stage:<stage>, stage_total:<stage>
    rule = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    held = models.PositiveIntegerField(default=0)
    # Round-robin: the key the last slot of a `total` went to (on the total's row).
    turn = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        app_label = "pipeline"
        constraints = [models.UniqueConstraint(fields=["pipeline", "rule", "key"], name="flow_counter_once")]

    def __str__(self) -> str:
        return f"{self.pipeline} {self.rule} {self.key}: {self.held}"


class ConcurrencySlot(models.Model):
    """A slot held by a run, from its admission to its end, or by a stage's attempt while it
    runs (rule `stage:<name>`); at most one per run and rule."""

    run_id = models.UUIDField()
    pipeline = models.CharField(max_length=200)
    rule = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    acquired_at = models.DateTimeField()

    class Meta:
        app_label = "pipeline"
        constraints = [models.UniqueConstraint(fields=["run_id", "rule"], name="flow_slot_once_per_run")]
        indexes = [models.Index(fields=["pipeline", "rule", "key"], name="flow_slot_key_idx")]


class ConcurrencyWaiter(models.Model):
    """A run (or one of its stages) waiting for a slot; admitted oldest first per key (`id` is
    the arrival order)."""

    id = models.BigAutoField(primary_key=True)
    run_id = models.UUIDField()
    pipeline = models.CharField(max_length=200)
    rule = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    event_id = models.UUIDField()
    trace_id = models.CharField(max_length=32)
    since = models.DateTimeField()

    class Meta:
        app_label = "pipeline"
        constraints = [models.UniqueConstraint(fields=["run_id", "rule"], name="flow_waiter_once_per_run")]
        indexes = [models.Index(fields=["pipeline", "rule", "key", "id"], name="flow_waiter_order_idx")]
