"""One system's producer, driven by the benchmark driver: `python -m tests.bench.producer SYSTEM`.

Reads one JSON command a line on stdin, answers one JSON line on stdout (everything else a library
prints goes to stderr):
  {"cmd": "produce", "n": N, "start": SEQ}   start N runs as fast as it can -> {"seconds"}
  {"cmd": "latency", "n": N, "warmup": W}    one run in flight at a time: start, wait for its
                                             done-signal, repeat -> {"ms": [...]}
  {"cmd": "floor", "messages": M, "seconds": S}  floor only: publish (at most M, for about S/2
                                             seconds) persistent messages with pipelined publisher
                                             confirms, then consume and ack them all
                                             -> {"messages", "publish_s", "consume_s"}
  {"cmd": "fanout", "variant": V, "n": N, "warmup": W}   ours: one run of a fan-out pipeline in
                                             flight at a time: emit, wait for its fan-in stage's
                                             start-signal and its done-signal, repeat
                                             -> {"emit_to_fanin_start_ms", "emit_to_done_ms", "fanin_starts"}
  {"cmd": "check"}                           ours: runs in the run store by status (those made since
                                             this producer started); peers: their task records
  {"cmd": "fanin_check", "pipeline": P}      ours: the fan-in stage rows of P's runs (status, attempts)
  {"cmd": "quit"}
`produce` and `latency` take an optional "variant" (ours only): which bench pipeline to start
(`chain_10`, `fanout_100`, `payload_64k`, ...; see VARIANTS), default the 3-stage `bench_noop`.
SYSTEM is `dramatiq`, `celery`, `celery_results`, `django_dramatiq`, `ours` or `floor`; the
environment says which queue, broker, database."""
from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
from typing import Any, Callable

import pika

from tests.bench.payload import make_big_payload, make_payload

FLOOR_BODY = b"x" * 400  # about the size of one of Dramatiq's stage messages carrying the payload


def _broker_params() -> pika.URLParameters:
    params = pika.URLParameters(os.environ["BENCH_BROKER_URL"])
    params.heartbeat = 0
    return params


def setup(system: str) -> tuple[Callable[[dict], Any] | None, dict]:
    if system == "dramatiq":
        from tests.bench import raw_dramatiq

        return raw_dramatiq.trigger, {}
    if system == "celery":
        from tests.bench import celery_app

        return celery_app.trigger, {}
    if system == "celery_results":
        from tests.bench import celery_results_app

        return celery_results_app.trigger, {}
    if system == "django_dramatiq":
        import django

        django.setup()
        from tests.bench.djdramatiq import tasks

        return tasks.trigger, {}
    if system == "ours":
        import django

        django.setup()
        from django.db import connection

        from pipeline import emit

        def trigger(payload: dict, event_type: str = "bench.started") -> None:
            emit(event_type, payload, source="bench")

        connection.ensure_connection()
        info = {"db_vendor": connection.vendor}
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                info["db_version"] = "PostgreSQL " + cursor.fetchone()[0]
        elif connection.vendor == "sqlite":
            import sqlite3

            info["db_version"] = "SQLite " + sqlite3.sqlite_version
        return trigger, info
    if system == "floor":
        return None, {}
    raise SystemExit(f"unknown system {system!r}")


# ours: variant -> (event type, payload maker); the pipelines are in tests/bench/benchapp/pipelines.py
VARIANTS: dict[str, tuple[str, Callable[[int], dict]]] = {
    **{f"chain_{n}": (f"bench.chain{n}", make_payload) for n in (3, 10, 30)},
    **{f"fanout_{n}": (f"bench.fanout{n}", make_payload) for n in (10, 100, 1000)},
    "payload_64k": ("bench.big", make_big_payload),
}


FLOW_KEYS = int((os.environ.get("BENCH_FLOW_CONCURRENCY") or "0x0").split("x")[1])


def make_keyed_payload(seq: int) -> dict:
    """The flow-control figure's payload: the runs spread over FLOW_KEYS customers, in turn."""
    return {**make_payload(seq), "customer_email": f"c{seq % FLOW_KEYS:02d}.lovelace@example.com"}


def for_variant(system: str, trigger: Callable[..., Any], variant: str | None) -> tuple[Callable[[dict], Any], Callable]:
    if not variant:
        return trigger, make_keyed_payload if FLOW_KEYS else make_payload
    if system != "ours" or variant not in VARIANTS:
        raise ValueError(f"no variant {variant!r} for {system}")
    event_type, maker = VARIANTS[variant]
    return (lambda payload: trigger(payload, event_type)), maker


# Runs are started from this many threads for every system, as a web server's threads would
# start them (BENCH_PRODUCER_THREADS; 1 = one thread, as the benchmark did before issue 19).
PRODUCER_THREADS = max(1, int(os.environ.get("BENCH_PRODUCER_THREADS", "4")))


def produce(trigger: Callable[[dict], Any], n: int, start: int, make: Callable[[int], dict] = make_payload) -> dict:
    t0 = time.perf_counter()
    if PRODUCER_THREADS == 1 or n < PRODUCER_THREADS:
        for seq in range(start, start + n):
            trigger(make(seq))
        return {"seconds": time.perf_counter() - t0}
    def part(k: int) -> None:
        for seq in range(start + k, start + n, PRODUCER_THREADS):
            trigger(make(seq))

    pool = _pool()
    for future in [pool.submit(part, k) for k in range(PRODUCER_THREADS)]:
        future.result()
    return {"seconds": time.perf_counter() - t0}


_threads = None


def _pool():
    """The same threads for every measurement: each keeps its broker connection (and database
    connection), as a web server's threads do."""
    global _threads
    if _threads is None:
        from concurrent.futures import ThreadPoolExecutor

        _threads = ThreadPoolExecutor(PRODUCER_THREADS, thread_name_prefix="producer")
    return _threads


def fanout(trigger: Callable[[dict], Any], make: Callable[[int], dict], n: int, warmup: int,
           timeout: float = 300.0) -> dict:
    """One fan-out run at a time: the time from emit to its fan-in stage starting (the stage
    sends its wall-clock start time) and to the run's done-signal. Afterwards listens a little
    longer, so that a second start of a fan-in stage is counted too."""
    from tests.bench.benchapp.pipelines import FANIN_QUEUE_SUFFIX

    done_queue = os.environ["BENCH_DONE_QUEUE"]
    fanin_queue = done_queue + FANIN_QUEUE_SUFFIX
    connection = pika.BlockingConnection(_broker_params())
    channel = connection.channel()
    starts: list[dict] = []
    dones: list[float] = []
    for queue in (done_queue, fanin_queue):
        channel.queue_declare(queue=queue, durable=False, auto_delete=False)
        channel.queue_purge(queue)
    channel.basic_consume(fanin_queue, lambda _c, _m, _p, body: starts.append(json.loads(body)), auto_ack=True)
    channel.basic_consume(done_queue, lambda _c, _m, _p, _b: dones.append(time.time()), auto_ack=True)
    to_start: list[float] = []
    to_done: list[float] = []
    try:
        for i in range(warmup + n):
            s0, d0 = len(starts), len(dones)
            t0 = time.time()
            trigger(make(30_000_000 + i))
            while len(starts) <= s0 or len(dones) <= d0:
                connection.process_data_events(time_limit=0.02)
                if time.time() - t0 > timeout:
                    raise TimeoutError(f"fan-out run {i}: {'no fan-in start' if len(starts) <= s0 else 'not done'} "
                                       f"after {timeout:.0f}s")
            if i >= warmup:
                to_start.append((starts[s0]["t"] - t0) * 1000)
                to_done.append((dones[d0] - t0) * 1000)
        linger = time.time() + 1.0
        while time.time() < linger:
            connection.process_data_events(time_limit=0.1)
    finally:
        connection.close()
    per_run = collections.Counter(s["run_id"] for s in starts)
    return {"emit_to_fanin_start_ms": to_start, "emit_to_done_ms": to_done, "runs": warmup + n,
            "fanin_starts": {"runs_started": len(per_run), "total": sum(per_run.values()),
                             "max_per_run": max(per_run.values(), default=0),
                             "runs_started_more_than_once": sum(1 for c in per_run.values() if c > 1),
                             "extra_done_signals": len(dones) - (warmup + n)}}


def latency(trigger: Callable[[dict], Any], n: int, warmup: int, timeout: float = 30.0,
            make: Callable[[int], dict] = make_payload) -> dict:
    queue = os.environ["BENCH_DONE_QUEUE"]
    connection = pika.BlockingConnection(_broker_params())
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=False, auto_delete=False)
    channel.queue_purge(queue)
    samples: list[float] = []
    try:
        messages = channel.consume(queue, auto_ack=True, inactivity_timeout=0.2)
        for i in range(warmup + n):
            t0 = time.perf_counter()
            trigger(make(10_000_000 + i))
            while True:
                method, _props, _body = next(messages)
                if method is not None:
                    break
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"run {i} not done after {timeout}s")
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1000)
        channel.cancel()
    finally:
        connection.close()
    return {"ms": samples}


def _publish_confirmed(queue: str, messages: int, deadline: float | None = None, window: int = 1000) -> int:
    """Publishes persistent messages with publisher confirms pipelined (up to `window` unconfirmed
    at a time, as a fast durable publisher does): `messages` of them, or fewer if `deadline`
    (perf_counter) passes first; returns how many, once the broker confirmed every one."""
    state: dict[str, Any] = {"published": 0, "pending": collections.deque(), "confirmed": 0, "error": None}
    props = pika.BasicProperties(delivery_mode=2)

    def publish_more(channel) -> None:
        nonlocal messages
        if deadline is not None and state["published"] and time.perf_counter() >= deadline:
            messages = state["published"]  # time is up: publish no more
        while state["published"] < messages and len(state["pending"]) < window:
            channel.basic_publish(exchange="", routing_key=queue, body=FLOOR_BODY, properties=props)
            state["published"] += 1
            state["pending"].append(state["published"])

    def on_confirm(frame) -> None:
        nonlocal messages
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            state["error"] = f"broker nacked message {method.delivery_tag}"
            connection.close()
            return
        pending = state["pending"]
        if method.multiple:
            while pending and pending[0] <= method.delivery_tag:
                pending.popleft()
                state["confirmed"] += 1
        else:
            pending.remove(method.delivery_tag)
            state["confirmed"] += 1
        if state["confirmed"] >= messages or (
                deadline is not None and not pending and time.perf_counter() >= deadline):
            messages = state["published"]
            connection.close()
        else:
            publish_more(state["channel"])

    def on_declared(_frame) -> None:
        publish_more(state["channel"])

    def on_channel(channel) -> None:
        state["channel"] = channel
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _f: channel.queue_declare(
            queue=queue, durable=True, callback=on_declared))

    def on_open(conn) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_failed(_conn, exc) -> None:
        state["error"] = f"connection failed: {exc}"
        connection.ioloop.stop()

    def on_closed(_conn, _reason) -> None:
        connection.ioloop.stop()

    connection = pika.SelectConnection(_broker_params(), on_open_callback=on_open,
                                       on_open_error_callback=on_failed, on_close_callback=on_closed)
    connection.ioloop.start()
    if state["error"] or state["confirmed"] < messages:
        raise RuntimeError(state["error"] or f"only {state['confirmed']}/{messages} confirmed")
    return messages


def floor(messages: int, seconds: float | None = None) -> dict:
    """The broker alone: persistent messages with publisher confirms (pipelined), then consumed
    and acked one by one (as a worker would, prefetch 16), each on one connection. With
    `seconds`, publishes for about half that time (at most `messages`), then consumes them all."""
    queue = os.environ["BENCH_QUEUE"]
    connection = pika.BlockingConnection(_broker_params())
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.queue_purge(queue)
        t0 = time.perf_counter()
        messages = _publish_confirmed(queue, messages, t0 + seconds / 2 if seconds else None)
        t1 = time.perf_counter()
        channel.basic_qos(prefetch_count=16)
        got = 0
        for method, _p, _b in channel.consume(queue, inactivity_timeout=10):
            if method is None:
                raise TimeoutError(f"floor: consumed {got}/{messages}, then nothing for 10s")
            channel.basic_ack(method.delivery_tag)
            got += 1
            if got >= messages:
                break
        channel.cancel()
        t2 = time.perf_counter()
        return {"messages": messages, "publish_s": t1 - t0, "consume_s": t2 - t1, "seconds": t2 - t0}
    finally:
        connection.close()


STARTED = time.time()


def check(system: str) -> dict:
    from django.db.models import Count

    if system == "celery_results":
        from django_celery_results.models import TaskResult

        return {"task_results_by_status": dict(TaskResult.objects.values_list("status").annotate(n=Count("id")).order_by())}
    if system == "django_dramatiq":
        from django_dramatiq.models import Task

        return {"tasks_by_status": dict(Task.tasks.values_list("status").annotate(n=Count("id")).order_by())}
    if system != "ours":
        return {}
    import datetime as dt

    from pipeline.models import Event, Run, StageRun

    # Runs made since this producer started: a store seeded with older runs counts only the bench's.
    since = dt.datetime.fromtimestamp(STARTED - 600, dt.timezone.utc)
    runs = Run.objects.filter(created_at__gte=since)
    by_pipeline: dict[str, dict[str, int]] = {}
    for pipeline, status, n in runs.values_list("pipeline", "status").annotate(n=Count("id")).order_by():
        by_pipeline.setdefault(pipeline, {})[status] = n
    return {
        "runs_by_status": dict(runs.values_list("status").annotate(n=Count("id")).order_by()),
        "runs_by_pipeline": by_pipeline,
        "stages_by_status": dict(StageRun.objects.filter(run__created_at__gte=since).values_list("status")
                                 .annotate(n=Count("id")).order_by()),
        "events_unpublished": Event.objects.filter(published_at__isnull=True, occurred_at__gte=since).count(),
        "runs_before": Run.objects.filter(created_at__lt=since).count() if os.environ.get("BENCH_SEEDED") else 0,
    }


def fanin_check(pipeline: str, stage: str = "join") -> dict:
    """The fan-in stage of every run of `pipeline`: how many there are, by status and attempts
    (a fan-in started twice shows as attempts 2, or two rows)."""
    from django.db.models import Count

    from pipeline.models import Run, StageRun

    rows = StageRun.objects.filter(run__pipeline=pipeline, stage=stage)
    return {
        "runs": Run.objects.filter(pipeline=pipeline).count(),
        "fanin_rows": rows.count(),
        "fanin_by_status_attempts": {f"{status}/{attempts}": n for status, attempts, n in
                                     rows.values_list("status", "attempts").annotate(n=Count("id")).order_by()},
    }


def main() -> None:
    system = sys.argv[1]
    out = sys.stdout
    sys.stdout = sys.stderr  # the protocol owns the real stdout

    def reply(data: dict) -> None:
        out.write(json.dumps(data, default=str) + "\n")
        out.flush()

    try:
        trigger, info = setup(system)
    except Exception as exc:
        reply({"ready": False, "ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        raise
    reply({"ready": True, "ok": True, "pid": os.getpid(), **info})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.get("cmd")
        try:
            if name == "produce":
                fn, make = for_variant(system, trigger, command.get("variant"))
                result = produce(fn, int(command["n"]), int(command.get("start", 0)), make)
            elif name == "latency":
                fn, make = for_variant(system, trigger, command.get("variant"))
                result = latency(fn, int(command["n"]), int(command.get("warmup", 0)), make=make)
            elif name == "fanout":
                fn, make = for_variant(system, trigger, command["variant"])
                result = fanout(fn, make, int(command["n"]), int(command.get("warmup", 0)),
                                float(command.get("timeout", 300)))
            elif name == "fanin_check":
                result = fanin_check(command["pipeline"])
            elif name == "floor":
                result = floor(int(command["messages"]), command.get("seconds"))
            elif name == "check":
                result = check(system)
            elif name == "quit":
                reply({"ok": True})
                break
            else:
                raise ValueError(f"unknown command {name!r}")
            reply({"ok": True, **result})
        except Exception as exc:
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


if __name__ == "__main__":
    main()
