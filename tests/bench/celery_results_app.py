"""Celery with a durable record per task, the way a Django project keeps one today: the same
`chain` of three no-op tasks as tests/bench/celery_app.py, with django-celery-results
(`result_backend="django-db"`) storing each task's result and state in the project's database
(tests.bench.settings_celery_results: SQLite, WAL). Its defaults otherwise (acks on receipt,
prefetch multiplier 4, JSON, results stored on completion, no extended results). The run is
done once the last task's result is stored: the done-signal goes from `task_postrun`, which
Celery sends after the result was written."""
from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.bench.settings_celery_results")

import django  # noqa: E402

django.setup()

from celery import Celery, chain  # noqa: E402
from celery.signals import task_postrun  # noqa: E402

from tests.bench.done import signal_done  # noqa: E402

QUEUE = os.environ.get("BENCH_QUEUE", "bench_celery_results")
app = Celery("bench_results", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_default_queue=QUEUE,
    result_backend="django-db",
    broker_connection_retry_on_startup=True,
    worker_redirect_stdouts=False,
)


@app.task(name="bench_results.stage1")
def stage1(data: dict) -> dict:
    return data


@app.task(name="bench_results.stage2")
def stage2(data: dict) -> dict:
    return data


@app.task(name="bench_results.stage3")
def stage3(data: dict) -> dict:
    return data


@task_postrun.connect
def _done(sender=None, state=None, **_kwargs) -> None:
    if sender is not None and sender.name == "bench_results.stage3" and state == "SUCCESS":
        signal_done()


def trigger(payload: dict) -> None:
    chain(stage1.s(payload), stage2.s(), stage3.s()).apply_async()
