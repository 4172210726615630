"""The scheduler process. Every copy syncs the schedules declared in code and competes for the
lease; the leader runs APScheduler with one job per active schedule, catches up fires missed
while no scheduler led (per schedule policy), follows run-time changes within a second, fires
buffered runs, and runs the outbox relay. A fire only emits: the work happens in the workers."""
from __future__ import annotations

import random
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from django.db import DatabaseError, close_old_connections
from django.utils import timezone as dj_timezone

from pipeline import ACTIVE_RUN_STATUSES, conf, get_logger, relay_once

from .firing import fire
from .leader import Lease
from .models import ScheduleRecord
from .operations import sync_code_schedules
from .registry import ScheduleError
from .timing import missed_fire_times

log = get_logger("schedules.runner")


class FireTimeExecutor(BaseExecutor):
    """Runs a job inline, once per due fire time, passing that time to it. Fires are quick
    (a database write and a publish), and APScheduler's own executors hide the fire time."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        events = []
        for run_time in run_times:
            try:
                job.func(*job.args, fire_time=run_time, **job.kwargs)
            except Exception as exc:
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=exc, traceback=traceback.format_exc()))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        self._run_job_success(job.id, events)


class SchedulerProcess:
    def __init__(self, only: list[str] | None = None, lease_ttl: float = 5.0, poll_seconds: float = 1.0) -> None:
        self.only = set(only or [])
        self.lease = Lease(lease_ttl)
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self.aps: BackgroundScheduler | None = None
        self.loaded: dict[str, datetime] = {}  # schedule name -> updated_at of the definition loaded
        self.last_relay = 0.0

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        log.info("scheduler.started", holder=self.lease.holder, only=sorted(self.only) or None)
        synced = False
        while not self.stopping.is_set():
            close_old_connections()
            if not synced:
                try:
                    sync_code_schedules()
                    synced = True
                except DatabaseError as exc:  # e.g. the database is not up yet: try again next second
                    log.warning("scheduler.sync_failed", error=f"{type(exc).__name__}: {exc}")
                    self.stopping.wait(self.poll_seconds)
                    continue
            try:
                leading = self.lease.renew()
            except DatabaseError as exc:
                log.warning("scheduler.lease_error", error=f"{type(exc).__name__}: {exc}")
                leading = False
            try:
                if leading and self.aps is None:
                    self._lead()
                elif not leading and self.aps is not None:
                    self._step_down("lease lost")
                if leading:
                    self._follow_changes()
                    self._fire_buffered()
                    self._relay()
            except DatabaseError as exc:
                log.warning("scheduler.database_error", error=f"{type(exc).__name__}: {exc}")
            except Exception:  # a bad schedule must not take the scheduler down; say so loudly
                log.exception("scheduler.error")
            self.stopping.wait(self.poll_seconds)
        if self.aps is not None:
            self._step_down("stopping")
        try:
            self.lease.release()
        except DatabaseError:
            pass
        log.info("scheduler.stopped", holder=self.lease.holder)

    def stop(self) -> None:
        self.stopping.set()

    # ---- leadership -----------------------------------------------------------------------
    def _lead(self) -> None:
        log.info("scheduler.leading", holder=self.lease.holder)
        self.aps = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": FireTimeExecutor()},
            job_defaults={"max_instances": 1},
        )
        self.aps.start()
        self.loaded = {}
        now = dj_timezone.now()
        for record in self._records():
            self._load(record, now, catch_up=True)

    def _step_down(self, reason: str) -> None:
        log.info("scheduler.stepped_down", holder=self.lease.holder, reason=reason)
        if self.aps is not None:
            self.aps.shutdown(wait=False)
        self.aps = None
        self.loaded = {}

    def _records(self):
        records = ScheduleRecord.objects.all()
        return records.filter(name__in=self.only) if self.only else records

    # ---- jobs -----------------------------------------------------------------------------
    def _load(self, record: ScheduleRecord, now: datetime, catch_up: bool) -> None:
        assert self.aps is not None
        try:
            self.aps.remove_job(record.name)
        except JobLookupError:
            pass
        self.loaded[record.name] = record.updated_at
        if record.paused:
            ScheduleRecord.objects.filter(name=record.name).update(next_fire_at=None)
            return
        spec = record.spec()
        try:
            trigger = spec.trigger()
        except ScheduleError as exc:  # stored before a rule it breaks: the other schedules still load
            log.error("schedule.invalid", schedule_id=record.name, error=str(exc))
            ScheduleRecord.objects.filter(name=record.name).update(next_fire_at=None)
            return
        if catch_up:
            self._catch_up(record, trigger, now)
        next_time = trigger.get_next_fire_time(None, now)
        if next_time is not None and record.last_fire_at is not None and next_time <= record.last_fire_at:
            next_time = trigger.get_next_fire_time(record.last_fire_at, now)
        if next_time is None:
            ScheduleRecord.objects.filter(name=record.name).update(next_fire_at=None)
            return
        self.aps.add_job(
            self._on_fire, trigger, id=record.name, name=record.name, kwargs={"name": record.name},
            next_run_time=next_time, misfire_grace_time=max(1, spec.misfire_grace_seconds),
            coalesce=spec.catch_up == "coalesce",
        )
        ScheduleRecord.objects.filter(name=record.name).update(next_fire_at=next_time)

    def _catch_up(self, record: ScheduleRecord, trigger: Any, now: datetime) -> None:
        spec = record.spec()
        since = max(t for t in (record.catch_up_from, record.created_at,
                                now - timedelta(seconds=spec.catch_up_window_seconds)) if t is not None)
        missed = missed_fire_times(trigger, record.last_fire_at, since, now)
        if not missed:
            return
        chosen = [] if spec.catch_up == "none" else missed[-1:] if spec.catch_up == "coalesce" else missed
        log.info("schedule.catching_up", schedule_id=record.name, policy=spec.catch_up, missed=len(missed),
                 firing=len(chosen), first_missed=missed[0].isoformat(), last_missed=missed[-1].isoformat())
        for fire_time in chosen:
            fire(record.name, fire_time, reason="catch_up")
        if spec.catch_up == "none":
            ScheduleRecord.objects.filter(name=record.name).update(last_fire_at=missed[-1])

    def _on_fire(self, name: str, fire_time: datetime | None = None) -> None:
        """An APScheduler job: fire now, or after a random jitter (keeping the nominal fire time)."""
        if not self.lease.held or self.stopping.is_set():
            return
        close_old_connections()
        record = ScheduleRecord.objects.filter(name=name).only("jitter_seconds").first()
        if record is None:
            return
        fire_time = fire_time or datetime.now(timezone.utc)
        if record.jitter_seconds and self.aps is not None:
            at = datetime.now(timezone.utc) + timedelta(seconds=random.uniform(0, record.jitter_seconds))
            self.aps.add_job(self._fire_jittered, "date", run_date=at, kwargs={"name": name, "nominal": fire_time},
                             misfire_grace_time=None)
        else:
            fire(name, fire_time)
        self._record_next(name)

    def _fire_jittered(self, name: str, nominal: datetime, fire_time: datetime | None = None) -> None:
        if self.lease.held and not self.stopping.is_set():
            close_old_connections()
            fire(name, nominal)

    def _record_next(self, name: str) -> None:
        job = self.aps.get_job(name) if self.aps is not None else None
        if job is not None and job.trigger is not None:
            next_time = job.trigger.get_next_fire_time(job.next_run_time, datetime.now(timezone.utc))
            ScheduleRecord.objects.filter(name=name).update(next_fire_at=next_time)

    def _follow_changes(self) -> None:
        """Loads schedules created, changed, paused or resumed at run time; drops deleted ones."""
        assert self.aps is not None
        current = dict(self._records().values_list("name", "updated_at"))
        for name in set(self.loaded) - set(current):
            try:
                self.aps.remove_job(name)
            except JobLookupError:
                pass
            self.loaded.pop(name, None)
            log.info("schedule.unloaded", schedule_id=name)
        changed = [name for name, updated in current.items() if self.loaded.get(name) != updated]
        if changed:
            now = dj_timezone.now()
            for record in self._records().filter(name__in=changed):
                new = record.name not in self.loaded
                self._load(record, now, catch_up=new)
                log.info("schedule.loaded", schedule_id=record.name, paused=record.paused)

    def _fire_buffered(self) -> None:
        waiting = self._records().filter(buffered_fire_at__isnull=False, paused=False).select_related("last_run")
        for record in waiting:
            if record.last_run is None or record.last_run.status not in ACTIVE_RUN_STATUSES:
                fire(record.name, record.buffered_fire_at, reason="buffered", check_overlap=False)

    def _relay(self) -> None:
        if time.monotonic() - self.last_relay < conf.get("PIPELINE_RELAY_INTERVAL_SECONDS"):
            return
        self.last_relay = time.monotonic()
        try:
            relay_once()
        except Exception as exc:  # keep leading; the next pass tries again
            log.warning("relay.failed", error=f"{type(exc).__name__}: {exc}")
