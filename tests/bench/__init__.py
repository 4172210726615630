"""`make bench`: our pipelines against raw pika, raw Dramatiq and Celery on the same RabbitMQ.

Not collected by pytest (no `test_*.py` here); `tests/test_bench_smoke.py` runs `run.py --smoke`."""
