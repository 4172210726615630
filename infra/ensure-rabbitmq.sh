#!/usr/bin/env bash
# Makes sure a RabbitMQ server can be started locally: installs Debian's rabbitmq-server when it
# is missing and we are root; otherwise says exactly what to do. Skipped when PIPELINE_BROKER_URL
# points at an existing broker.
set -euo pipefail

if [[ -n "${PIPELINE_BROKER_URL:-}" ]]; then
    exit 0
fi
if [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "rabbitmq: installing Debian's rabbitmq-server (apt-get)"
    "$(dirname "$0")/apt-install.sh" rabbitmq-server
    exit 0
fi
echo "rabbitmq: rabbitmq-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server)" \
     "or set PIPELINE_BROKER_URL=amqp://user:password@host:5672/%2F to use an existing broker." >&2
exit 2
