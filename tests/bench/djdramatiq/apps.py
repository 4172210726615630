from django.apps import AppConfig


class BenchDjangoDramatiqConfig(AppConfig):
    name = "tests.bench.djdramatiq"
    label = "bench_djdramatiq"
