"""Creating runs and handing their ready stages to the broker."""
from __future__ import annotations

from typing import Iterable

from django.utils import timezone

from .definitions import Pipeline, Stage, registry
from .logging import get_logger
from .models import Event, Run, StageRun

log = get_logger("pipeline.runs")


def create_runs(
    event: Event, pipelines: Iterable[Pipeline], *, trigger: str, replay_of: Run | None = None
) -> list[Run]:
    """One pending run per pipeline, with its root stages waiting to be published."""
    now = timezone.now()
    runs = [
        Run(event=event, event_type=event.type, pipeline=p.name, trigger=trigger, created_at=now, replay_of=replay_of)
        for p in pipelines
    ]
    Run.objects.bulk_create(runs)
    StageRun.objects.bulk_create(
        [
            StageRun(run=run, stage=stage.name, enqueued_at=now)
            for run in runs
            for stage in registry.get(run.pipeline).roots
        ]
    )
    return runs


def message_options(*, run_id: str, event_id: str, trace_id: str, pipeline: str) -> dict:
    """What every stage message carries besides its argument: the ids that logs are bound to."""
    return {"trace_id": trace_id, "event_id": event_id, "run_id": run_id, "pipeline": pipeline}


def enqueue_stage(stage: Stage, *, run_id: str, event_id: str, trace_id: str, delay_ms: int | None = None) -> str:
    """Publishes one stage message; returns its message id."""
    message = stage.actor.message_with_options(
        args=(run_id,),
        **message_options(run_id=run_id, event_id=event_id, trace_id=trace_id, pipeline=stage.pipeline.name),
    )
    stage.actor.broker.enqueue(message, delay=delay_ms)
    return message.message_id
