#!/usr/bin/env bash
# `make bench`: installs the `bench` extra (Celery, psutil, py-spy) into .venv (again only when
# pyproject.toml changes), then runs the benchmark driver, which starts a RabbitMQ node of its own
# (RABBITMQ port BENCH_RABBITMQ_PORT, default 5692) and a PostgreSQL cluster (BENCH_PGPORT, default
# 5499) unless they already run, and stops whatever it started. PIPELINE_BROKER_URL points it at an
# existing broker instead. Arguments go to the driver: infra/bench.sh --rounds 5 --skip-celery ...
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
    echo "bench: no .venv; run 'make venv' (or 'make bench') first" >&2
    exit 2
fi
stamp=".venv/.bench-installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    echo "bench: installing the bench extra into .venv"
    "$PY" -m pip install -q -e '.[bench]'
    rm -f .venv/.bench-installed-* && touch "$stamp"
fi
exec "$PY" -m tests.bench.run "$@"
