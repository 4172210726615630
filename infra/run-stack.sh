#!/usr/bin/env bash
# The whole development stack in one terminal: the local broker (unless PIPELINE_BROKER_URL is set),
# then web, workers and scheduler under honcho with their logs interleaved. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

started_broker=0
stop_all() {
    trap - EXIT INT TERM
    if [[ $started_broker == 1 ]]; then
        infra/rabbitmq.sh stop || true
    fi
}
trap stop_all EXIT INT TERM

if [[ -z "${PIPELINE_BROKER_URL:-}" ]]; then
    infra/rabbitmq.sh start
    started_broker=1
fi
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py devsetup
cat <<TXT

  Stack starting: web http://127.0.0.1:8000/ (admin at /admin/, user admin, password in var/dev-admin-password)
  API token in var/dev-api-token; JSON logs in ${PIPELINE_LOG_DIR:-var/log}/
  Place an order:
    curl -s -X POST http://127.0.0.1:8000/shop/orders -H 'Content-Type: application/json' \\
      -d '{"customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}'

TXT
# honcho forwards Ctrl-C to every process and waits for them; then our trap stops the broker.
.venv/bin/honcho -d . -f infra/Procfile.dev start
