"""Raw Dramatiq: three no-op actors chained with `dramatiq.pipeline`, no Django, the broker's
default middleware. `BENCH_CONFIRM=1` turns on `confirm_delivery` (workers and producer)."""
from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tests.bench.done import signal_done

QUEUE = os.environ.get("BENCH_QUEUE", "bench_dramatiq")
broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"], confirm_delivery=os.environ.get("BENCH_CONFIRM") == "1")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_stage1")
def stage1(data: dict) -> dict:
    return data


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_stage2")
def stage2(data: dict) -> dict:
    return data


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_stage3")
def stage3(data: dict) -> dict:
    signal_done()
    return data


def trigger(payload: dict) -> None:
    dramatiq.pipeline([stage1.message(payload), stage2.message(), stage3.message()]).run()
