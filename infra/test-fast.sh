#!/usr/bin/env bash
# The fast tier alone: every test not marked `broker`, in this process's in-process pipelines
# (pipeline.testing), on SQLite. No RabbitMQ: PIPELINE_BROKER_URL points at a port nobody listens
# on, so a test that reaches for a broker fails loudly instead of finding somebody else's.
# `make test` runs this tier and the broker tier, on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is cached (some machines set PYTHONDONTWRITEBYTECODE): without it every pytest process
# (each xdist worker, each pass) compiles and assertion-rewrites ~570 modules again (the test
# modules, and every module of each pytest plugin's distribution, ours included): ~6 s a process.
unset PYTHONDONTWRITEBYTECODE
export PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:9/%2F"
export TEST_FUZZ_EXAMPLES="${TEST_FUZZ_EXAMPLES:-10}"  # the API fuzz tries 30 cases per operation in `make test`
export PIPELINE_LOG_DIR="${PIPELINE_LOG_DIR:-${PIPELINE_VAR_DIR:-$PWD/var}/test-log}-fast"
unset DATABASE_URL
# A SQLite test database of its own: `make test` may be running in this checkout at the same time.
export TEST_SQLITE_NAME="${PIPELINE_VAR_DIR:-$PWD/var}/test-fast.sqlite3"
rm -rf "$PIPELINE_LOG_DIR"
# On every core (pytest-xdist; TEST_FAST_PROCESSES=0 for one process): its tests share nothing
# but the SQLite file's name, which pytest-django suffixes per worker process, and the log folder,
# which tests/settings.py splits per worker process.
exec .venv/bin/python -m pytest -m "not broker" -n "${TEST_FAST_PROCESSES:-auto}" "$@"
