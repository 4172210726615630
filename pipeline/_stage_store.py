"""The stage transitions of the message path, as operations for the group-commit writer.

Each is a function of a `writer.Tx`: a few precompiled statements (`pipeline.sql`) that the
writer runs in one transaction with the other threads' operations. The allowed source states
are those of `pipeline.states` (the state machine), written into the statements' WHERE clauses:
a claim takes a pending or retrying stage, or a running one whose lease ran out or that this
very message held; an outcome is recorded only by the claim that still holds the stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _committed_before as committed_before, _writer as writer
from .logging import get_logger
from ._sql import now as utcnow

log = get_logger("pipeline.flow")

if TYPE_CHECKING:
    from ._definitions import Stage
    from ._runtime import RunInfo


def claim(
    stage: "Stage", info: "RunInfo", message_id: str, worker: str, lease_until: datetime, results: dict | None,
    started_at: datetime | None = None, take_back: str | None = None,
) -> "tuple[int, dict, bool] | Waits | None":
    """Claims the stage for this message and reads what the message did not carry; returns
    (attempt, parents' results, whether this claim started the run), `Waits` when the stage is
    over its own concurrency limit (pipeline.flow.stage_slots), or None when not claimed.
    A first stage's claim also moves its pending run to running, in the same transaction.
    `started_at`: when a rate limit admitted the stage (`pipeline.flow.rate`), recorded as its start.
    `take_back`: the worker from which a stage running under this very message id may be taken
    back (`pipeline._redelivery.inspect`: one the check found dead); None: from none."""
    need_results = bool(stage.after) and results is None
    root = not stage.after

    def op(tx: writer.Tx) -> tuple[int, dict, bool] | None:
        q, d = tx.q, tx.d
        now = utcnow()
        run_key = d.uuid(info.run_id)
        # (no running stage has an empty message id: '' takes nothing back)
        params = (message_id, d.dt(lease_until), d.dt(started_at or now), worker, run_key, stage.name,
                  message_id if take_back else "", take_back or "", d.dt(now), run_key)
        started_run = False
        if root and q.fused:  # the claim and the run's start in one statement
            attempts, started = tx.execute(q.claim_then_start, (*params, d.dt(now), run_key)).fetchone()
            if attempts is None:
                return None
            rows = [(attempts,)]
            started_run = started == 1
        else:
            rows = tx.execute(q.claim, params).fetchall()
            if not rows:
                return None
            if root:
                started_run = tx.execute(q.start_run, (d.dt(now), run_key)).rowcount == 1
        if started_run:
            info.started_at = now
        if info.started_at is None:  # not carried: a relay's or a replay's message, or a second root
            started, created = tx.execute(q.run_times, (run_key,)).fetchone()
            info.started_at = d.load_dt(started) or d.load_dt(created)
        if info.payload is None or info.event_type is None or info.occurred_at is None:
            event_id, type_, payload, occurred, trace_id = tx.execute(q.event_fields, (run_key,)).fetchone()
            info.event_type, info.payload, info.occurred_at = type_, d.load_json(payload), d.load_dt(occurred)
            info.event_id = info.event_id or d.load_uuid(event_id)
            info.trace_id = info.trace_id or trace_id
        got = results or {}
        if need_results:
            sql = q.in_list(q.parent_results, len(stage.after), d)
            got = {name: d.load_json(value) for name, value in tx.execute(sql, (run_key, *stage.after)).fetchall()}
        return rows[0][0], got, started_run

    if stage.concurrency is None:
        return writer.run(op)

    def gated(tx: writer.Tx) -> tuple[int, dict, bool] | Waits | None:
        """The stage's own limit first (pipeline.flow.stage_slots): a slot, or the stage waits."""
        slots = flow_stage_slots()
        gate = slots.gate(tx, stage, info, utcnow())
        if gate is None or gate[0] == "waiting":
            return None if gate is None else Waits(gate[1])
        claimed = op(tx)
        if claimed is None and gate[0] == slots.TOOK:  # a duplicate message: the slot was not its to take
            slots.release_stage(tx, info.run_id, stage, utcnow())
        return claimed

    result = writer.run(gated)
    if isinstance(result, Waits):
        log.info("flow.waiting", rule="concurrency", key=result.key, stage=stage.name, run_id=info.run_id,
                 event_id=info.event_id, trace_id=info.trace_id, pipeline=info.pipeline, limit=stage.concurrency.limit,
                 reason=f"{stage.concurrency.limit} execution(s) of this stage in progress for this key")
    return result


@dataclass
class Waits:
    """A claim's answer when the stage is over its own concurrency limit: it now waits."""

    key: str


@dataclass
class Done:
    ready: list = field(default_factory=list)  # stages to publish
    inline: bool = False  # the inline child was claimed for this message
    finished: bool = False  # the run succeeded with this stage
    admitted: list = field(default_factory=list)  # runs its end let in (flow control), to publish
    recovered: bool = False  # read back from this very write's earlier commit (`pipeline._committed_before`)


@dataclass
class SuccessRecord:
    """A stage's success and what follows from it, in one transaction: the stage row, the
    children made ready (a fan-in counted down), the inline child claimed, the run's end."""

    stage: "Stage"
    info: "RunInfo"
    message_id: str
    attempt: int
    result_json: str
    duration_ms: float
    children: list
    inline: "Stage | None"
    worker: str
    inline_lease: datetime | None
    total_ms: float = 0.0

    def __call__(self, tx: writer.Tx) -> Done | None:
        done = self._record(tx)
        if done is not None and not done.recovered and self.stage.pipeline.flow:
            if self.stage.concurrency is not None:  # its own slot, given back with its outcome
                done.admitted += flow_stage_slots().release_stage(tx, self.info.run_id, self.stage, utcnow())
            if done.finished:
                done.admitted += flow_slots().release(tx, self.info.run_id, self.stage.pipeline, utcnow())
        return done

    def _record(self, tx: writer.Tx) -> Done | None:
        q, d = tx.q, tx.d
        now = utcnow()
        when = d.dt(now)
        run_key = d.uuid(self.info.run_id)
        stage = self.stage
        if q.fused:
            fused = self._fused(tx, now, run_key)
            if fused is not _NOT_FUSED:
                return fused
        if tx.execute(q.succeed, (self.result_json, when, self.duration_ms, run_key, stage.name, self.message_id,
                                  self.attempt)).rowcount != 1:
            return committed_before.success(self, tx, run_key, Done())
        done = Done()
        if self.inline is not None:
            # Claimed for this message right away, unless the run stopped meanwhile.
            # It starts after its parent finished: a microsecond later, so that every reader that
            # orders transitions by time (the live stream, the waterfall) sees them in that order.
            child_start = d.dt(now + timedelta(microseconds=1))
            done.inline = tx.execute(q.insert_claimed, (run_key, self.inline.name, when, child_start,
                                                        self.message_id, d.dt(self.inline_lease), self.worker,
                                                        run_key)).rowcount == 1
            return done
        single = [c for c in self.children if len(c.after) == 1]
        if len(single) == 1:
            if tx.execute(q.insert_ready, (run_key, single[0].name, when, run_key)).rowcount == 1:
                done.ready.append(single[0])
        elif single:
            if tx.executemany(q.insert_ready, [(run_key, c.name, when, run_key) for c in single]).rowcount:
                done.ready.extend(single)
        for child in self.children:
            if len(child.after) > 1:
                left = tx.execute(q.count_down, (run_key, child.name, None, len(child.after) - 1, when)).fetchall()
                if left and left[0][0] == 0:
                    done.ready.append(child)
        if not self.children:
            sinks = stage.pipeline.sinks
            if len(sinks) > 1:
                tx.execute(q.lock_run, (run_key,)).fetchall()
                sql = q.in_list(q.sinks_succeeded, len(sinks), d)
                if tx.execute(sql, (run_key, *sinks)).fetchone()[0] != len(sinks):
                    return done
            started = self.info.started_at or now
            self.total_ms = (now - started).total_seconds() * 1000
            done.finished = tx.execute(q.end_run, ("succeeded", when, self.total_ms, "", run_key)).rowcount == 1
        return done


    def _fused(self, tx: writer.Tx, now: datetime, run_key: Any) -> Any:
        """The success and its one consequence in a single statement (PostgreSQL), for the
        shapes most stages have: a linear child (inline or published), or the run's only end."""
        q, d = tx.q, tx.d
        when = d.dt(now)
        head = (self.result_json, when, self.duration_ms, run_key, self.stage.name, self.message_id, self.attempt)
        done = Done()
        if self.inline is not None:
            child_start = d.dt(now + timedelta(microseconds=1))
            succeeded, claimed = tx.execute(q.succeed_then_claim, (
                *head, run_key, self.inline.name, when, child_start, self.message_id, d.dt(self.inline_lease),
                self.worker, run_key)).fetchone()
            done.inline = claimed == 1
        elif len(self.children) == 1 and len(self.children[0].after) == 1:
            child = self.children[0]
            succeeded, created = tx.execute(q.succeed_then_ready, (*head, run_key, child.name, when,
                                                                   run_key)).fetchone()
            if created == 1:
                done.ready.append(child)
        elif not self.children and len(self.stage.pipeline.sinks) == 1:
            self.total_ms = (now - (self.info.started_at or now)).total_seconds() * 1000
            succeeded, ended = tx.execute(q.succeed_then_end, (*head, "succeeded", when, self.total_ms, "",
                                                                 run_key)).fetchone()
            done.finished = ended == 1
        else:
            return _NOT_FUSED
        return done if succeeded == 1 else committed_before.success(self, tx, run_key, Done())


_NOT_FUSED = object()


@dataclass
class Failed:
    run_ended: bool = False
    admitted: list = field(default_factory=list)  # runs its end let in (flow control), to publish
    recovered: bool = False  # read back from this very write's earlier commit (`pipeline._committed_before`)


@dataclass
class FailureRecord:
    """A failed attempt: the stage retrying (with when), or failed and its run with it."""

    stage: "Stage"
    info: "RunInfo"
    message_id: str
    attempt: int
    error: str
    traceback: str
    error_type: str
    duration_ms: float
    now: datetime
    final: bool
    delay_ms: int | None
    total_ms: float = 0.0

    def __call__(self, tx: writer.Tx) -> Failed | None:
        q, d = tx.q, tx.d
        run_key = d.uuid(self.info.run_id)
        row = tx.execute(q.attempt_log, (run_key, self.stage.name)).fetchone()
        entries = list(d.load_json(row[0]) or []) if row else []
        entries.append({
            "attempt": self.attempt, "error_type": self.error_type, "error": self.error,
            "traceback": self.traceback, "finished_at": self.now.isoformat(),
            "duration_ms": round(self.duration_ms, 3),
        })
        status = "failed" if self.final else "retrying"
        next_at = None if self.final else d.dt(self.now + timedelta(milliseconds=self.delay_ms or 0))
        if tx.execute(q.stage_failed, (status, self.error, self.traceback, d.json(entries), d.dt(self.now),
                                       self.duration_ms, next_at, run_key, self.stage.name, self.message_id,
                                       self.attempt)).rowcount != 1:
            return committed_before.failure(self, tx, run_key, Failed())
        result = Failed()
        if self.stage.concurrency is not None:  # its own slot, given back with the attempt's outcome
            result.admitted += flow_stage_slots().release_stage(tx, self.info.run_id, self.stage, self.now)
        if self.final:
            started = self.info.started_at or self.now
            self.total_ms = (self.now - started).total_seconds() * 1000
            result.run_ended = tx.execute(q.end_run, ("failed", d.dt(self.now), self.total_ms,
                                                      f"stage {self.stage.name}: {self.error}", run_key)).rowcount == 1
            if result.run_ended and self.stage.pipeline.flow:
                result.admitted += flow_slots().release(tx, self.info.run_id, self.stage.pipeline, self.now)
        return result


def flow_slots() -> Any:
    """`pipeline.flow.slots`, imported once a flow-controlled run ends (it needs the app registry)."""
    from .flow import _slots as slots  # here: flow control's tables need the app registry; most pipelines never load it

    return slots


def flow_stage_slots() -> Any:
    """`pipeline.flow.stage_slots`, imported once a stage with its own concurrency limit is claimed."""
    from .flow import _stage_slots as stage_slots  # here: as flow_slots

    return stage_slots
