#!/usr/bin/env bash
# The whole suite against a real RabbitMQ: a test-only node on its own port (so a running
# `make run` stack is left alone), stopped again when the tests end, whatever their outcome.
# The suite runs twice: on SQLite (the embedded default), then on PostgreSQL (the production
# store), a throwaway local cluster under var/ (TEST_SKIP_POSTGRES=1 skips that second pass).
set -euo pipefail
cd "$(dirname "$0")/.."

export RABBITMQ_PORT="${TEST_RABBITMQ_PORT:-5682}"
export PGPORT="${TEST_PGPORT:-5488}"
started_broker=0
started_postgres=0
cleanup() {
    if [[ $started_broker == 1 ]]; then
        infra/rabbitmq.sh stop >/dev/null || true
    fi
    if [[ $started_postgres == 1 ]]; then
        infra/postgres.sh stop >/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

if [[ -z "${PIPELINE_BROKER_URL:-}" ]]; then
    if ! infra/rabbitmq.sh status >/dev/null 2>&1; then
        started_broker=1
    fi
    infra/rabbitmq.sh start
    export PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:${RABBITMQ_PORT}/%2F"
fi
export PIPELINE_LOG_DIR="${PIPELINE_LOG_DIR:-${PIPELINE_VAR_DIR:-$PWD/var}/test-log}"
# The dashboard's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
if [[ ! -x /usr/bin/chromium && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's chromium for the browser tests (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "test: could not install chromium; the browser tests will be skipped" >&2
fi
# The multi-host test makes network namespaces (iproute2's `ip netns`) and runs its own PostgreSQL in one.
if ! command -v ip >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's iproute2 for the multi-host test (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null) \
        || echo "test: could not install iproute2; the multi-host test will be skipped" >&2
fi
[[ "$(id -u)" != 0 ]] || infra/ensure-postgres.sh || echo "test: no PostgreSQL; the multi-host test will be skipped" >&2
rm -rf "$PIPELINE_LOG_DIR"
status=0
echo "test: pass 1 of 2, run store on SQLite"
.venv/bin/python -m pytest "$@" || status=$?

if [[ "${TEST_SKIP_POSTGRES:-0}" != 1 && -z "${DATABASE_URL:-}" ]]; then
    infra/ensure-postgres.sh
    if ! infra/postgres.sh status >/dev/null 2>&1; then
        started_postgres=1
    fi
    infra/postgres.sh start
    echo "test: pass 2 of 2, run store on PostgreSQL"
    rm -rf "${PIPELINE_LOG_DIR}-postgres"
    DATABASE_URL="postgres://postgres@127.0.0.1:${PGPORT}/pipeline" \
        PIPELINE_LOG_DIR="${PIPELINE_LOG_DIR}-postgres" \
        .venv/bin/python -m pytest "$@" || status=$?
fi
exit $status
