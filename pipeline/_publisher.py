"""Publishing to the broker, in one place: the first stages after an emit commits, the stages a
finished stage made ready, replays, and the relay that re-publishes what a crash or a broker
outage left behind. Every caller publishes only what is already committed, and a publish that
fails leaves the row waiting for the relay (a warning says so). Publishing twice is harmless: a
stage message that finds its stage already claimed or done is dropped (see `stage_store.claim`)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable

from django.db.models import F, Q
from django.utils import timezone

from . import conf, _writer as writer
from ._definitions import DefinitionError, Stage, registry
from .flow._priority import route
from .flow._rules import GATE_PASSED, URGENT
from .flow._slots_gate import repair as flow_repair
from .logging import get_logger
from .models import Event, StageRun
from ._statuses import ADMITTED_RUN_STATUSES, StageStatus

log = get_logger("pipeline.publisher")

_ACTIVE_RUN = Q(run__status__in=list(ADMITTED_RUN_STATUSES))  # (a waiting run has no stage to publish yet)


def message_options(*, run_id: str, event_id: str, trace_id: str, pipeline: str) -> dict:
    """What every stage message carries besides its argument: the ids that logs are bound to."""
    return {"trace_id": trace_id, "event_id": event_id, "run_id": run_id, "pipeline": pipeline}


def enqueue_stage(
    stage: Stage, *, run_id: str, event_id: str, trace_id: str, delay_ms: int | None = None,
    carried: dict[str, Any] | None = None,
) -> str:
    """Publishes one stage message; returns its message id. `carried`: what the stage would
    otherwise read from the store (event type, payload, parents' results, the run's start)."""
    options = message_options(run_id=run_id, event_id=event_id, trace_id=trace_id, pipeline=stage.pipeline.name)
    if carried:
        options.update(carried)
    message = stage.actor.message_with_options(args=(run_id,), **options)
    # Urgent runs (the pipeline's priority, or the event's, carried) go to the urgent twin queue.
    message = route(message, options.get("priority") or stage.pipeline.priority)
    stage.actor.broker.enqueue(message, delay=delay_ms)
    return message.message_id


def publish_ready(
    stages: Iterable[Stage], run_id: str, event_id: str, trace_id: str, carried: dict[str, Any] | None = None,
    delay_ms: int | None = None,
) -> int:
    """Publishes committed, ready stages; one that cannot be published stays pending in the
    store, where the relay finds it. Returns how many were published."""
    published = 0
    for stage in stages:
        try:
            enqueue_stage(stage, run_id=run_id, event_id=event_id, trace_id=trace_id, carried=carried,
                          delay_ms=delay_ms)
            published += 1
        except Exception as exc:  # left pending: the relay publishes it again
            log.warning("stage.publish_failed", run_id=run_id, next_stage=stage.name,
                        error=f"{type(exc).__name__}: {exc}")
    return published


def publish_admitted(admitted: list[Any]) -> None:
    """After the commit that admitted them (pipeline.flow): `flow.released`, then their ready
    stages published (urgent still when their event was)."""
    urgent = _urgent_event_ids([one.event_id for one in admitted])
    for one in admitted:
        stage = one.rule[len("stage:"):] if one.rule.startswith("stage:") else None  # a stage's own limit
        log.info("flow.released", rule="concurrency", stage=stage, key=one.key, run_id=one.run_id, event_id=one.event_id,
                 trace_id=one.trace_id, pipeline=one.pipeline, released_by=one.released_by or None,
                 stages=one.stages)
        try:
            stages = [registry.get(one.pipeline).stages[name] for name in one.stages]
        except (DefinitionError, KeyError):
            log.error("stage.unknown", run_id=one.run_id, pipeline=one.pipeline, stages=one.stages)
            continue
        carried = carried_priority(URGENT if str(one.event_id) in urgent else "") or {}
        if stage is not None:  # it waited after passing the flow gate: it does not pay again
            carried[GATE_PASSED] = True
        publish_ready(stages, one.run_id, one.event_id, one.trace_id, carried=carried or None)


def _urgent_event_ids(event_ids: list[Any]) -> set[str]:
    """Those of `event_ids` emitted urgent (one query, none for an empty list: the common case)."""
    if not event_ids:
        return set()
    return {str(i) for i in Event.objects.filter(id__in=set(event_ids), priority=URGENT).values_list("id", flat=True)}


def carried_priority(priority: str) -> dict[str, Any] | None:
    """What a stage message published again (relay, replay, a slot handed on) carries for its
    event's stored priority (`Event.priority`, "" for normal)."""
    return {"priority": priority} if priority else None


def _publish_stage_runs(stage_runs: list[StageRun]) -> int:
    """Publishes stage runs loaded from the database (with their run and event)."""
    items = []
    for stage_run in stage_runs:
        run = stage_run.run
        try:
            stage = registry.get(run.pipeline).stages[stage_run.stage]
        except (DefinitionError, KeyError):
            log.error("stage.unknown", run_id=str(run.id), pipeline=run.pipeline, stage=stage_run.stage)
            continue
        items.append((stage, str(run.id), str(run.event_id), run.event.trace_id, carried_priority(run.event.priority)))
    for stage, run_id, event_id, trace_id, carried in items:
        enqueue_stage(stage, run_id=run_id, event_id=event_id, trace_id=trace_id, carried=carried)
    return len(items)


def publish_first_stages(
    event_id: str, trace_id: str, first_stages: list[tuple[Stage, str]], carried: dict[str, Any] | None = None,
) -> bool:
    """Right after the emitting transaction commits: publishes the first stages of its runs
    (known already, no need to read them back) and marks the event published, in a coming
    group commit (lost in a crash, the mark only makes the relay publish again, harmlessly). A
    broker that cannot be reached leaves the event for the relay, with one warning line."""
    try:
        for stage, run_id in first_stages:
            enqueue_stage(stage, run_id=run_id, event_id=event_id, trace_id=trace_id, carried=carried)
    except Exception as exc:  # the broker is down or refused: the relay will try again
        return _publish_failed(event_id, exc)
    now = timezone.now()

    def mark(tx: writer.Tx) -> None:  # one UPDATE for every event of the batch
        tx.update_later(tx.q.mark_published_in, (tx.d.dt(now),), tx.d.uuid(event_id))

    writer.submit(mark)
    log.info("event.published", event_id=event_id, stages_published=len(first_stages))
    return True


def publish_event(event_id: str) -> bool:
    """The relay's way: publishes the waiting first stages of an event's runs, read from the
    database, and marks the event published."""
    waiting = list(
        StageRun.objects.filter(_ACTIVE_RUN, run__event_id=event_id, status=StageStatus.PENDING).select_related(
            "run__event"
        )
    )
    try:
        published = _publish_stage_runs(waiting)
    except Exception as exc:
        return _publish_failed(event_id, exc)
    return _published(event_id, published)


def _published(event_id: str, count: int) -> bool:
    Event.objects.filter(id=event_id).update(published_at=timezone.now(), publish_attempts=F("publish_attempts") + 1)
    log.info("event.published", event_id=event_id, stages_published=count)
    return True


def _publish_failed(event_id: str, exc: Exception) -> bool:
    Event.objects.filter(id=event_id).update(publish_attempts=F("publish_attempts") + 1)
    log.warning("event.publish_failed", event_id=event_id, error=f"{type(exc).__name__}: {exc}")
    return False


def relay_once(limit: int = 500) -> dict[str, int]:
    """One pass of the relay: events committed but never published, and stages that should be
    moving but have no message (lost publish, lost delayed retry, holder gone past its lease)."""
    now = timezone.now()
    counts = {"events": 0, "stages": 0}
    admitted = flow_repair(limit)  # slots of runs that are over without giving them back (by hand)
    publish_admitted(admitted)
    counts["admitted"] = len(admitted)
    cutoff = now - timedelta(seconds=conf.get("PIPELINE_RELAY_AFTER_SECONDS"))
    for event_id in Event.objects.filter(published_at__isnull=True, occurred_at__lt=cutoff).values_list(
        "id", flat=True
    )[:limit]:
        if not publish_event(str(event_id)):
            break  # the broker is still unreachable: no point trying the rest now
        counts["events"] += 1

    stalled_cutoff = now - timedelta(seconds=conf.get("PIPELINE_STALLED_AFTER_SECONDS"))
    stalled = list(
        StageRun.objects.filter(_ACTIVE_RUN)
        .filter(
            Q(status=StageStatus.PENDING, enqueued_at__lt=stalled_cutoff, run__event__published_at__isnull=False)
            | Q(status__in=[StageStatus.RETRYING, StageStatus.THROTTLED], next_attempt_at__lt=stalled_cutoff)
            | Q(status=StageStatus.RUNNING, lease_until__lt=now)
        )
        .select_related("run__event")[:limit]
    )
    if stalled:
        try:
            counts["stages"] = _publish_stage_runs(stalled)
        except Exception as exc:
            log.warning("relay.publish_failed", error=f"{type(exc).__name__}: {exc}")
            return counts
        StageRun.objects.filter(id__in=[s.id for s in stalled], status=StageStatus.PENDING).update(enqueued_at=now)
        StageRun.objects.filter(id__in=[s.id for s in stalled], status__in=[StageStatus.RETRYING, StageStatus.THROTTLED]).update(
            next_attempt_at=now
        )
        for s in stalled:
            log.warning(
                "stage.republished", run_id=str(s.run_id), stage=s.stage, status=s.status, pipeline=s.run.pipeline
            )
    if counts["events"] or counts["stages"] or counts["admitted"]:
        log.info("relay.pass", **counts)
    return counts
