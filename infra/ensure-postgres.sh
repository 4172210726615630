#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are there for the test pass on PostgreSQL: installs
# Debian's packages when they are missing and we are root; otherwise says what to install.
set -euo pipefail
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql (apt-get)"
    "$(dirname "$0")/apt-install.sh" postgresql
    exit 0
fi
echo "postgres: PostgreSQL is not installed (Debian: sudo apt-get install postgresql); or run TEST_SKIP_POSTGRES=1 make test" >&2
exit 2
