"""Three no-op actors chained with `dramatiq.pipeline`, like tests/bench/raw_dramatiq.py, on the
broker django_dramatiq builds from `DRAMATIQ_BROKER` (found by `rundramatiq` as this app's tasks)."""
from __future__ import annotations

import os

import dramatiq

QUEUE = os.environ.get("BENCH_QUEUE", "bench_dj_dramatiq")
LAST_ACTOR = "bench_dj_stage3"


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_dj_stage1")
def stage1(data: dict) -> dict:
    return data


@dramatiq.actor(queue_name=QUEUE, actor_name="bench_dj_stage2")
def stage2(data: dict) -> dict:
    return data


@dramatiq.actor(queue_name=QUEUE, actor_name=LAST_ACTOR)
def stage3(data: dict) -> dict:
    return data


def trigger(payload: dict) -> None:
    dramatiq.pipeline([stage1.message(payload), stage2.message(), stage3.message()]).run()
