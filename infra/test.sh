#!/usr/bin/env bash
# The whole suite against a real RabbitMQ: a test-only node on its own port (so a running
# `make run` stack is left alone), stopped again when the tests end, whatever their outcome.
set -euo pipefail
cd "$(dirname "$0")/.."

export RABBITMQ_PORT="${TEST_RABBITMQ_PORT:-5682}"
started_broker=0
cleanup() {
    if [[ $started_broker == 1 ]]; then
        infra/rabbitmq.sh stop >/dev/null || true
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
rm -rf "$PIPELINE_LOG_DIR"
.venv/bin/python -m pytest "$@"
