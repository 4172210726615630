#!/usr/bin/env bash
# The whole development stack in one terminal: the local broker (unless PIPELINE_BROKER_URL is set),
# then web, workers and scheduler under infra/supervise.py with their logs interleaved.
# A process that dies is restarted (with a backoff); Ctrl-C stops all of it gracefully (workers
# drain), the broker last, and exits 0.
#
# Ports (environment): WEB_PORT (8000), RABBITMQ_PORT (5672, the local broker),
# PIPELINE_WORKER_METRICS_PORT (9191), PIPELINE_SCHEDULER_METRICS_PORT (9192).
set -euo pipefail
cd "$(dirname "$0")/.."

export WEB_PORT="${WEB_PORT:-8000}"
export PIPELINE_WORKER_METRICS_PORT="${PIPELINE_WORKER_METRICS_PORT:-9191}"
export PIPELINE_SCHEDULER_METRICS_PORT="${PIPELINE_SCHEDULER_METRICS_PORT:-9192}"

started_broker=0
stop_broker() {
    trap - EXIT INT TERM
    if [[ $started_broker == 1 ]]; then
        infra/rabbitmq.sh stop || true
    fi
}
trap stop_broker EXIT INT TERM

if [[ -z "${PIPELINE_BROKER_URL:-}" ]]; then
    infra/rabbitmq.sh start
    started_broker=1
    export PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:${RABBITMQ_PORT:-5672}/%2F"
fi
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py devsetup
base="http://127.0.0.1:${WEB_PORT}"
cat <<TXT

  Stack starting: web ${base}/ (admin at /admin/, user admin, password in var/dev-admin-password)
  API token in var/dev-api-token; JSON logs in ${PIPELINE_LOG_DIR:-var/log}/
  Metrics: web ${base}/metrics; workers (run and stage counters) http://127.0.0.1:${PIPELINE_WORKER_METRICS_PORT}/metrics;
           scheduler http://127.0.0.1:${PIPELINE_SCHEDULER_METRICS_PORT}/metrics
  Place an order:
    curl -s -X POST ${base}/shop/orders -H 'Content-Type: application/json' \\
      -d '{"customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}'
  Ctrl-C stops everything (workers drain first, the broker last).

TXT
# From here the supervisor owns the stack, the broker's stop included (it runs after every process
# has stopped): exec, so that a signal sent to this script reaches it.
trap - EXIT INT TERM
finally=()
if [[ $started_broker == 1 ]]; then
    finally=(--finally "infra/rabbitmq.sh stop")
fi
exec .venv/bin/python infra/supervise.py -d . -f infra/Procfile.dev "${finally[@]}"
