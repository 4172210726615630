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
  {"cmd": "check"}                           ours: runs in the run store by status
  {"cmd": "quit"}
SYSTEM is `dramatiq`, `celery`, `ours` or `floor`; the environment says which queue, broker, database."""
from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
from typing import Any, Callable

import pika

from tests.bench.payload import make_payload

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
    if system == "ours":
        import django

        django.setup()
        from django.db import connection

        from pipeline import emit

        def trigger(payload: dict) -> None:
            emit("bench.started", payload, source="bench")

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


def produce(trigger: Callable[[dict], Any], n: int, start: int) -> dict:
    t0 = time.perf_counter()
    for seq in range(start, start + n):
        trigger(make_payload(seq))
    return {"seconds": time.perf_counter() - t0}


def latency(trigger: Callable[[dict], Any], n: int, warmup: int, timeout: float = 30.0) -> dict:
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
            trigger(make_payload(10_000_000 + i))
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


def check() -> dict:
    from django.db.models import Count

    from pipeline.models import Event, Run, StageRun

    return {
        "runs_by_status": dict(Run.objects.values_list("status").annotate(n=Count("id")).order_by()),
        "stages_by_status": dict(StageRun.objects.values_list("status").annotate(n=Count("id")).order_by()),
        "events_unpublished": Event.objects.filter(published_at__isnull=True).count(),
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
                result = produce(trigger, int(command["n"]), int(command.get("start", 0)))
            elif name == "latency":
                result = latency(trigger, int(command["n"]), int(command.get("warmup", 0)))
            elif name == "floor":
                result = floor(int(command["messages"]), command.get("seconds"))
            elif name == "check":
                result = check() if system == "ours" else {}
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
