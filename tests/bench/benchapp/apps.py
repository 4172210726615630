import os

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "tests.bench.benchapp"
    label = "benchapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        stats_dir = os.environ.get("BENCH_WRITER_STATS_DIR")
        if stats_dir:  # the driver asks every process of our systems (tests/bench/writer_stats.py)
            from tests.bench import writer_stats

            writer_stats.install(stats_dir)
