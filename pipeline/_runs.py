"""Creating runs (with the ORM: replays and tests; `emit` writes its rows with `pipeline._sql`)."""
from __future__ import annotations

from typing import Iterable

from django.utils import timezone

from ._definitions import Pipeline, registry
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
