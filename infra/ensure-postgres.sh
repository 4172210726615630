#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are there for the test pass on PostgreSQL: installs
# Debian's packages when they are missing and we are root; otherwise says what to install.
set -euo pipefail
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql (apt-get)"
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    exit 0
fi
echo "postgres: PostgreSQL is not installed (Debian: sudo apt-get install postgresql); or run TEST_SKIP_POSTGRES=1 make test" >&2
exit 2
