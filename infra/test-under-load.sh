#!/usr/bin/env bash
# `make test` N times in a row (default 5) with a CPU-bound load beside it: one busy process per
# core, at the same priority as the tests, for as long as the runs last (and never past
# TEST_LOAD_MAX_SECONDS, default 4 h). Why: CI machines are shared and a test that passes only on
# an idle machine is a bug; this is how the suite shows it does not flake (issue 13).
#
#   infra/test-under-load.sh [N] [pytest args...]
#
# Stops at the first failing run. Each run's output goes to var/test-under-load/run-<i>.log; one
# summary line per run (wall seconds, exit status) goes to stdout and to var/test-under-load/summary.
# The load is stress-ng (`--cpu <cores>`) when installed, else a Python busy loop per core.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-5}"
[[ $# -gt 0 ]] && shift
max_seconds="${TEST_LOAD_MAX_SECONDS:-14400}"
out="var/test-under-load"
mkdir -p "$out"
: >"$out/summary"
cores="$(nproc)"
load_pids=()

stop_load() {
    for pid in "${load_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${load_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_load EXIT INT TERM

if command -v stress-ng >/dev/null 2>&1; then
    stress-ng --cpu "$cores" --timeout "${max_seconds}s" >"$out/load.log" 2>&1 &
    load_pids+=($!)
    what="stress-ng --cpu $cores"
else
    for _ in $(seq "$cores"); do
        # Bounded in time like every loop here; the trap stops it sooner.
        python3 -c "import time
end = time.monotonic() + $max_seconds
while time.monotonic() < end:
    sum(range(10000))" >"$out/load.log" 2>&1 &
        load_pids+=($!)
    done
    what="$cores busy Python loops"
fi
echo "test-under-load: $runs run(s) of infra/test.sh beside $what; logs in $out/" | tee -a "$out/summary"

status=0
for i in $(seq "$runs"); do
    start=$(date +%s)
    run_status=0
    infra/test.sh "$@" >"$out/run-$i.log" 2>&1 || run_status=$?
    line="run $i of $runs: exit $run_status after $(( $(date +%s) - start )) s ($( (grep -E '^    .*[0-9]+ (passed|failed|error)' "$out/run-$i.log" || true) | sed 's/^ *//; s/=//g' | paste -sd ';' -))"  # infra/test.sh's summary: one line per session
    echo "$line" | tee -a "$out/summary"
    if [[ $run_status != 0 ]]; then
        status=$run_status
        echo "test-under-load: run $i failed; see $out/run-$i.log" | tee -a "$out/summary"
        break
    fi
done
exit $status
