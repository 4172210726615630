#!/usr/bin/env bash
# Installs Debian packages as root without letting their install scripts start system-wide
# services (we run our own broker and database nodes under var/). Usage: apt-install.sh PKG...
set -euo pipefail
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
