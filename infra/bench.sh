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
"$PY" -m tests.bench.run "$@"
# Two more figures the issues ask of the benchmark: `manage.py trace` over a 1 GiB log, and the
# scheduler's fire precision (on the bench broker node, started again briefly if needed).
if [[ " $* " != *" --smoke "* ]]; then
    "$PY" infra/trace_bench.py --gib "${BENCH_TRACE_GIB:-1}"
    export RABBITMQ_PORT="${BENCH_RABBITMQ_PORT:-5692}"
    started=0
    if [[ -z "${PIPELINE_BROKER_URL:-}" ]]; then
        infra/rabbitmq.sh status >/dev/null 2>&1 || started=1
        infra/rabbitmq.sh start >/dev/null
        export PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:${RABBITMQ_PORT}/%2F"
    fi
    "$PY" -m tests.bench.fire_precision --seconds "${BENCH_FIRE_SECONDS:-30}" || true
    if [[ $started == 1 ]]; then infra/rabbitmq.sh stop >/dev/null || true; fi
fi
