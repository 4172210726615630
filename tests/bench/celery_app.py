"""Celery: a `chain` of three no-op tasks on the same RabbitMQ, no result backend (completion is
the same done-signal as for the other systems). Celery's defaults otherwise (acks on receipt,
prefetch multiplier 4, JSON)."""
from __future__ import annotations

import os

from celery import Celery, chain

from tests.bench.done import signal_done

QUEUE = os.environ.get("BENCH_QUEUE", "bench_celery")
app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_redirect_stdouts=False,
)


@app.task(name="bench.stage1")
def stage1(data: dict) -> dict:
    return data


@app.task(name="bench.stage2")
def stage2(data: dict) -> dict:
    return data


@app.task(name="bench.stage3")
def stage3(data: dict) -> dict:
    signal_done()
    return data


def trigger(payload: dict) -> None:
    chain(stage1.s(payload), stage2.s(), stage3.s()).apply_async()
