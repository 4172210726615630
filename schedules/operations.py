"""Operating schedules from the API, the admin and the CLI: create, change, pause, resume,
trigger now, backfill. Every change is saved in the database, where the running leader picks
it up within a second or two."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from pipeline import Event, get_logger

from .bounds import MAX_BACKFILL, check_bounds
from .firing import fire
from .models import ScheduleRecord
from .registry import Schedule, ScheduleError, check_target, schedules
from .timing import fire_key, fire_times

log = get_logger("schedules.operations")

_POLICY_FIELDS = ("misfire_grace_seconds", "catch_up", "catch_up_window_seconds", "overlap", "jitter_seconds")


class ScheduleNotFound(LookupError):
    pass


def get(name: str) -> ScheduleRecord:
    record = ScheduleRecord.objects.select_related("last_run").filter(name=name).first()
    if record is None:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return record


def spec_from_data(data: dict[str, Any], name: str | None = None) -> Schedule:
    """A checked schedule from API data; raises ScheduleError naming the bad field."""
    allowed = {"name", "pipeline", "actor", "payload", "cron", "timezone", "interval_seconds", "run_at", *_POLICY_FIELDS}
    unknown = sorted(set(data) - allowed - {"paused"})
    if unknown:
        raise ScheduleError(f"unknown field(s): {', '.join(unknown)}", unknown[0])
    values = {k: v for k, v in data.items() if k in allowed}
    values["name"] = name or values.get("name")
    if not values.get("name"):
        raise ScheduleError("field 'name' is required", "name")
    if values.get("run_at") is not None:
        try:
            values["run_at"] = datetime.fromisoformat(str(values["run_at"]))
        except ValueError:
            raise ScheduleError(f"run_at {values['run_at']!r} is not an ISO 8601 date-time", "run_at") from None
    for number in ("interval_seconds", "misfire_grace_seconds", "catch_up_window_seconds", "jitter_seconds"):
        if number in values and values[number] is not None and not isinstance(values[number], (int, float)):
            raise ScheduleError(f"{number} must be a number", number)
    try:
        spec = Schedule(**values)
    except TypeError as exc:
        raise ScheduleError(str(exc)) from None
    check_bounds(spec)
    check_target(spec)
    return spec


def next_fire_at(spec: Schedule, paused: bool, last_fire_at: datetime | None = None) -> datetime | None:
    """The next fire time, from the same engine the scheduler fires by: the API and the dashboard
    show it as soon as a schedule is created, changed or resumed (the leader keeps it current)."""
    if paused:
        return None
    trigger, now = spec.trigger(), timezone.now()
    next_time = trigger.get_next_fire_time(None, now)
    if next_time is not None and last_fire_at is not None and next_time <= last_fire_at:
        next_time = trigger.get_next_fire_time(last_fire_at, now)
    return next_time


def create(data: dict[str, Any]) -> ScheduleRecord:
    spec = spec_from_data(data)
    if ScheduleRecord.objects.filter(name=spec.name).exists():
        raise ScheduleError(f"a schedule named {spec.name!r} already exists", "name")
    paused = bool(data.get("paused", False))
    record = ScheduleRecord.objects.create(
        name=spec.name, source="runtime", paused=paused, catch_up_from=timezone.now(),
        next_fire_at=next_fire_at(spec, paused), **ScheduleRecord.fields_from_spec(spec),
    )
    log.info("schedule.created", schedule_id=spec.name, target=spec.target)
    return record


def update(name: str, data: dict[str, Any]) -> ScheduleRecord:
    record = get(name)
    if record.source == "code" and set(data) - {"paused"}:
        raise ScheduleError(f"schedule {name!r} is declared in code: change it there (only pause/resume here)")
    if set(data) - {"paused"}:  # pausing alone leaves the definition as it is, unchecked
        merged = {**record.spec().definition(), **data}
        merged.pop("name", None)
        spec = spec_from_data(merged, name=name)
        for field, value in ScheduleRecord.fields_from_spec(spec).items():
            setattr(record, field, value)
    else:
        spec = record.spec()
    if "paused" in data:
        record.paused = bool(data["paused"])
    record.next_fire_at = next_fire_at(spec, record.paused, record.last_fire_at)
    record.save()
    log.info("schedule.updated", schedule_id=name)
    return record


def delete(name: str) -> None:
    record = get(name)
    if record.source == "code":
        raise ScheduleError(f"schedule {name!r} is declared in code: remove it there")
    record.delete()
    log.info("schedule.deleted", schedule_id=name)


def pause(name: str) -> ScheduleRecord:
    record = get(name)
    record.paused = True
    record.next_fire_at = None
    record.save(update_fields=["paused", "next_fire_at", "updated_at"])
    log.info("schedule.paused", schedule_id=name)
    return record


def resume(name: str) -> ScheduleRecord:
    """Resumes firing from now on: fire times missed while paused are not caught up."""
    record = get(name)
    record.paused = False
    record.catch_up_from = timezone.now()
    record.next_fire_at = next_fire_at(record.spec(), False, record.last_fire_at)
    record.save(update_fields=["paused", "catch_up_from", "next_fire_at", "updated_at"])
    log.info("schedule.resumed", schedule_id=name)
    return record


def trigger_now(name: str) -> dict[str, Any]:
    get(name)
    started = fire(name, timezone.now(), reason="manual", check_overlap=False)
    return started or {}


def backfill(
    name: str, start: datetime, end: datetime, progress: Callable[[Iterable], Iterable] = lambda it: it
) -> dict[str, int]:
    """One run per fire time in [start, end]; fire times that already ran are not run again."""
    record = get(name)
    if end < start:
        raise ScheduleError("backfill end is before its start", "end")
    times = list(fire_times(record.spec().trigger(), start, end, limit=MAX_BACKFILL + 1))
    if len(times) > MAX_BACKFILL:
        raise ScheduleError(f"the range holds more than {MAX_BACKFILL} fire times; backfill it in parts", "end")
    created = 0
    for fire_time in progress(times):
        key = fire_key(name, fire_time)
        existed = Event.objects.filter(idempotency_key=key).exists()
        fire(name, fire_time, reason="backfill", check_overlap=False)
        created += 0 if existed else 1
    log.info("schedule.backfilled", schedule_id=name, fire_times=len(times), runs_started=created,
             start=start.isoformat(), end=end.isoformat())
    return {"fire_times": len(times), "runs_started": created}


def sync_code_schedules() -> None:
    """Brings the database in line with the schedules declared in code: new ones are added,
    changed definitions are updated (pause state and history kept), removed ones are deleted.
    Safe when several schedulers start at once: a record another one just created is reused."""
    now = timezone.now()
    for name, spec in schedules.items():
        fields = ScheduleRecord.fields_from_spec(spec)
        try:
            with transaction.atomic():
                record, created = ScheduleRecord.objects.get_or_create(
                    name=name, defaults={"source": "code", "catch_up_from": now, **fields}
                )
        except IntegrityError:
            record, created = ScheduleRecord.objects.get(name=name), False
        if created:
            log.info("schedule.created", schedule_id=name, source="code", target=spec.target)
        elif any(getattr(record, f) != v for f, v in fields.items()) or record.source != "code":
            for field, value in fields.items():
                setattr(record, field, value)
            record.source = "code"
            record.save()
            log.info("schedule.updated", schedule_id=name, source="code")
    stale = ScheduleRecord.objects.filter(source="code").exclude(name__in=list(schedules))
    for name in stale.values_list("name", flat=True):
        log.info("schedule.deleted", schedule_id=name, reason="no longer declared in code")
    stale.delete()
