#!/usr/bin/env bash
# The whole suite against a real RabbitMQ: test-only nodes on their own ports (so a running
# `make run` stack is left alone), stopped again when the tests end, whatever their outcome.
# The suite runs twice: on SQLite (the embedded default) and on PostgreSQL (the production store),
# a throwaway local cluster under var/ (TEST_SKIP_POSTGRES=1 skips that second pass).
#
# The two passes run at the same time (most of a pass's wall time is waiting on processes, not
# CPU), and each in three sessions at once: its broker tier (`-m broker`) in two halves (the files
# tests/conftest.py lists in SECOND_BROKER_SESSION, and the rest; TEST_BROKER_SHARD=second|first)
# and its fast tier (`-m "not broker"`, no broker reachable), so six pytest sessions in all. Each
# broker-tier session has a broker node of its own (SQLite: TEST_RABBITMQ_PORT, default 5682, and
# +6; PostgreSQL: TEST_RABBITMQ_PORT+3 and +9; their state under var/rabbitmq*; the cluster test of
# each uses its broker's port +100..+102, so they never meet). Each session has its own test
# database (the PostgreSQL fast tier and second half on a server of their own, TEST_PGPORT+100 or
# TEST_PGPORT_FAST: the store-outage test, in the first half, stops and starts the one on
# TEST_PGPORT), its own log folder and its output in a file of its own
# (var/test-{sqlite,postgres}{,-more,-fast}.out), each line also printed here with the session's
# name in front. At the end a summary says how each session ended; the exit status is the worst of them.
# TEST_SPLIT_TIERS=0 keeps each pass in one session; TEST_SEQUENTIAL=1 runs the passes one after
# the other (so does a PIPELINE_BROKER_URL given from outside: both would share its queues).
#
# Every test runs in both passes except those marked `store_independent`, which never touch the
# suite's run store, so a second pass could not differ: tests/conftest.py runs them in the SQLite
# pass only, except the bench smoke (`store_independent(run_in="postgres")`), which runs in the
# PostgreSQL pass when both run (TEST_BOTH_PASSES=1), so that the two passes end together:
# - they read or check files only: test_docs.py, test_layers.py, test_settings_table.py,
#   test_typing.py, test_packaging.py, pipeline/test_flow_declarations.py, schedules/test_cron.py,
#   the metrics-folder test of pipeline/test_metrics.py, `manage.py trace` on log files
#   (pipeline/test_trace.py);
# - they bring a store of their own: test_run_stack.py, pipeline/test_multihost.py,
#   test_bench_smoke.py, web/test_web_apps.py (the API and dashboard tests without the shop, on
#   their own SQLite), web/test_production_settings.py's `manage.py check` runs (SQLite in memory);
# - pipeline/test_broker_cluster.py skips itself there: broker failover, not the store.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is cached (some machines set PYTHONDONTWRITEBYTECODE): without it every pytest process
# (each xdist worker, each pass) compiles and assertion-rewrites ~570 modules again (the test
# modules, and every module of each pytest plugin's distribution, ours included): ~6 s a process.
unset PYTHONDONTWRITEBYTECODE

# All of it in one function, called on the last line: bash reads a script as it runs it, so an
# edit of this file during a run (a `git pull`, a checkout) would otherwise be run half old, half new.
main() {

SQLITE_BROKER_PORT="${TEST_RABBITMQ_PORT:-5682}"
POSTGRES_BROKER_PORT="${TEST_RABBITMQ_PORT_POSTGRES:-$((SQLITE_BROKER_PORT + 3))}"
POSTGRES_BROKER_VAR="var/rabbitmq-postgres-pass"
export PGPORT="${TEST_PGPORT:-5488}"
POSTGRES_FAST_PORT="${TEST_PGPORT_FAST:-$((PGPORT + 100))}"
# The broker tier's second session of each pass (tests/conftest.py, SECOND_BROKER_SESSION): a node each.
SQLITE_MORE_BROKER_PORT="$((SQLITE_BROKER_PORT + 6))"
POSTGRES_MORE_BROKER_PORT="$((SQLITE_BROKER_PORT + 9))"
# "broker PORT VAR" or "postgres PORT", a line for each server this script started (written by the
# starters, which run at the same time, before each start; read by cleanup, which stops them).
started_list="$(mktemp "${TMPDIR:-/tmp}/pipeline-test-servers.XXXXXX")"
starters=()  # "pid name log" of each server start under way
pass_pids=()
printer_pids=()
statuses=()
cleanup() {
    trap '' INT  # a second Ctrl-C must not cut the clean-up short (each step below is bounded)
    for pid in "${pass_pids[@]}"; do  # interrupted: the passes' pytest first (SIGINT: its fixtures stop what they started)
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pass_pids[@]}" "${printer_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local entry
    for entry in "${starters[@]}"; do  # interrupted during the set-up: the starts end first (bounded)
        wait "${entry%% *}" 2>/dev/null || true
    done
    # Every server at once, the nodes without rabbitmqctl (their queues are thrown away): one at a
    # time and gracefully, stopping six servers took 50 s of each loaded run.
    local -a stoppers=()
    if [[ -s "$started_list" ]]; then
        while read -r kind a b; do
            if [[ "$kind" == broker ]]; then
                RABBITMQ_STOP_MODE=force RABBITMQ_PORT="$a" RABBITMQ_VAR="$b" infra/rabbitmq.sh stop >/dev/null 2>&1 &
            else
                PGPORT="$a" infra/postgres.sh stop >/dev/null 2>&1 &
            fi
            stoppers+=($!)
        done <"$started_list"
    fi
    for pid in "${stoppers[@]}"; do
        wait "$pid" || true
    done
    rm -f "$started_list"
    [[ -z "${TEST_SHARED_DIR:-}" ]] || rm -rf "$TEST_SHARED_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The servers start at the same time (each node or cluster has a folder, a port and an Erlang
# cookie of its own); wait_servers waits for them all. One after the other they took 30 s.
start_server() {  # "broker PORT VAR" or "postgres PORT": starts it (idempotent) in the background,
    # and records it for cleanup when it was not running already
    local kind="$1" port="$2" log="$OUT_DIR/test-start-$1-$2.log" script=infra/rabbitmq.sh
    local -a env_args=(RABBITMQ_PORT="$port" RABBITMQ_VAR="${3:-}")
    if [[ "$kind" == postgres ]]; then
        env_args=(PGPORT="$port")
        script=infra/postgres.sh
    fi
    local record="$*"
    (
        trap - INT TERM EXIT  # the script's own traps are not this starter's
        if ! env "${env_args[@]}" "$script" status >/dev/null 2>&1; then
            echo "$record" >>"$started_list"
        fi
        env "${env_args[@]}" "$script" start
    ) >"$log" 2>&1 </dev/null &
    starters+=("$! $kind:$port $log")
}

start_broker() { start_server broker "$1" "$2"; }  # port var
start_postgres() { start_server postgres "$1"; }  # port

wait_servers() {  # every start under way: its output, and exit 1 if any failed
    local entry pid name log failed=0
    for entry in "${starters[@]}"; do
        read -r pid name log <<<"$entry"
        if ! wait "$pid"; then
            failed=1
            echo "test: could not start $name:" >&2
        fi
        cat "$log"
        rm -f "$log"
    done
    starters=()
    return "$failed"
}

external_broker="${PIPELINE_BROKER_URL:-}"
run_postgres=0
if [[ "${TEST_SKIP_POSTGRES:-0}" != 1 && -z "${DATABASE_URL:-}" ]]; then
    run_postgres=1
fi
concurrent=1
if [[ "${TEST_SEQUENTIAL:-0}" == 1 || -n "$external_broker" || $run_postgres == 0 ]]; then
    concurrent=0
fi

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

LOG_BASE="${PIPELINE_LOG_DIR:-${PIPELINE_VAR_DIR:-$PWD/var}/test-log}"
OUT_DIR="${PIPELINE_VAR_DIR:-$PWD/var}"
mkdir -p "$OUT_DIR"

# Brokers (and PostgreSQL) first, all started at once and before any pass starts: a pass never
# waits on the other's set-up.
if [[ -z "$external_broker" ]]; then
    start_broker "$SQLITE_BROKER_PORT" "var/rabbitmq"
    if [[ $run_postgres == 1 && $concurrent == 1 ]]; then
        start_broker "$POSTGRES_BROKER_PORT" "$POSTGRES_BROKER_VAR"
    fi
fi
split_tiers=0
[[ $concurrent == 0 || "${TEST_SPLIT_TIERS:-1}" != 1 ]] || split_tiers=1
if [[ $split_tiers == 1 && -z "$external_broker" ]]; then
    start_broker "$SQLITE_MORE_BROKER_PORT" var/rabbitmq-sqlite-more
    start_broker "$POSTGRES_MORE_BROKER_PORT" var/rabbitmq-postgres-more
fi
if [[ $run_postgres == 1 ]]; then
    infra/ensure-postgres.sh
    start_postgres "$PGPORT"
    if [[ $split_tiers == 1 ]]; then
        # The PostgreSQL fast tier's own server: the broker tier's store-outage test stops and
        # starts the one on TEST_PGPORT, which must not cut the fast tier off mid-test.
        start_postgres "$POSTGRES_FAST_PORT"
    fi
fi
wait_servers || exit 1

# start_pass NAME BROKER_PORT BROKER_VAR LOG_DIR [VAR=VALUE...] -- pytest args: starts one pass in
# the background, its environment set for it alone, its output to var/test-NAME.out and, each line
# with the pass's name in front, to this terminal; its pytest's pid is appended to pass_pids.
# Each session's output ends with its 15 slowest tests (5 s or more): where a run's time went.
start_pass() {
    local name="$1" port="$2" broker_var="$3" log="$4"
    shift 4
    local env_args=()
    while [[ "$1" != -- ]]; do env_args+=("$1"); shift; done
    shift
    local url="${external_broker:-amqp://guest:guest@127.0.0.1:${port}/%2F}" out="$OUT_DIR/test-$name.out"
    rm -rf "$log"
    : >"$out"
    env RABBITMQ_PORT="$port" RABBITMQ_VAR="$broker_var" PIPELINE_BROKER_URL="$url" PIPELINE_LOG_DIR="$log" \
        "${env_args[@]}" .venv/bin/python -m pytest --durations=15 --durations-min=5 "$@" >"$out" 2>&1 </dev/null &
    local pid=$!
    pass_pids+=("$pid")
    # Ends by itself once pytest has ended and every line is printed.
    tail --pid="$pid" -n +1 -F "$out" 2>/dev/null | sed -u "s/^/[$name] /" &
    printer_pids+=($!)
}

# wait_pass PID: pytest's exit status.
wait_pass() {
    local status=0
    wait "$1" || status=$?
    return "$status"
}

summary() {  # NAME STATUS: the session's outcome in one block
    local name="$1" status="$2" file="$OUT_DIR/test-$1.out" outcome="passed"
    case "$status" in 0) ;; 5) outcome="no test to run" ;; *) outcome="FAILED (exit $status)" ;; esac
    echo "test: $name: $outcome, output in $file"
    grep -E '^(FAILED|ERROR) ' "$file" | sed 's/^/    /' || true
    tail -n 1 "$file" | sed 's/^/    /'
}

# What the two passes of this run share (the from-nothing test's fresh virtual environment, made
# once): a folder of this run's own, removed at its end.
TEST_SHARED_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pipeline-test.XXXXXX")"
export TEST_SHARED_DIR

# Job control: each pytest in a process group of its own, where SIGINT is not ignored (as it is
# for a background command otherwise), so an interrupted `make test` lets it tear down.
set -m
postgres_url="postgres://postgres@127.0.0.1:${PGPORT}/pipeline"
no_broker="amqp://guest:guest@127.0.0.1:9/%2F"  # the fast tier needs none: reaching for one fails loudly
[[ $run_postgres == 0 ]] || export TEST_BOTH_PASSES=1
sessions=()
if [[ $concurrent == 1 ]]; then
    # Each pass in three sessions at once: its broker tier in two halves (real processes, mostly
    # waiting) and its fast tier (in-process, mostly CPU), each with its own test database;
    # TEST_SPLIT_TIERS=0 keeps each pass in one session.
    if [[ $split_tiers == 1 ]]; then
        echo "test: both passes at once, each in three sessions: SQLite (broker tier in two halves on" \
             ":$SQLITE_BROKER_PORT and :$SQLITE_MORE_BROKER_PORT, fast tier) and PostgreSQL (broker tier on" \
             ":$POSTGRES_BROKER_PORT and :$POSTGRES_MORE_BROKER_PORT, fast tier)"
        start_pass sqlite "$SQLITE_BROKER_PORT" var/rabbitmq "$LOG_BASE" TEST_BROKER_SHARD=first -- -m broker "$@"
        start_pass postgres "$POSTGRES_BROKER_PORT" "$POSTGRES_BROKER_VAR" "${LOG_BASE}-postgres" \
            DATABASE_URL="$postgres_url" TEST_BROKER_SHARD=first -- -m broker "$@"
        # The broker tier's second half: a node each, a test database each (PostgreSQL: a database of
        # its own on the fast tier's server, out of reach of the store-outage test too).
        start_pass sqlite-more "$SQLITE_MORE_BROKER_PORT" var/rabbitmq-sqlite-more "${LOG_BASE}-sqlite-more" \
            TEST_BROKER_SHARD=second TEST_SQLITE_NAME="$OUT_DIR/test-sqlite-more.sqlite3" -- -m broker "$@"
        start_pass postgres-more "$POSTGRES_MORE_BROKER_PORT" var/rabbitmq-postgres-more "${LOG_BASE}-postgres-more" \
            DATABASE_URL="postgres://postgres@127.0.0.1:${POSTGRES_FAST_PORT}/pipeline_more" TEST_BROKER_SHARD=second \
            -- -m broker "$@"
        start_pass sqlite-fast "$SQLITE_BROKER_PORT" var/rabbitmq "${LOG_BASE}-sqlite-fast" \
            PIPELINE_BROKER_URL="$no_broker" TEST_SQLITE_NAME="$OUT_DIR/test-sqlite-fast.sqlite3" -- -m "not broker" "$@"
        start_pass postgres-fast "$POSTGRES_BROKER_PORT" "$POSTGRES_BROKER_VAR" "${LOG_BASE}-postgres-fast" \
            PIPELINE_BROKER_URL="$no_broker" DATABASE_URL="postgres://postgres@127.0.0.1:${POSTGRES_FAST_PORT}/pipeline" \
            -- -m "not broker" "$@"
        sessions=(sqlite postgres sqlite-more postgres-more sqlite-fast postgres-fast)
    else
        echo "test: both passes at once: SQLite (broker :$SQLITE_BROKER_PORT) and PostgreSQL (broker :$POSTGRES_BROKER_PORT)"
        start_pass sqlite "$SQLITE_BROKER_PORT" var/rabbitmq "$LOG_BASE" -- "$@"
        start_pass postgres "$POSTGRES_BROKER_PORT" "$POSTGRES_BROKER_VAR" "${LOG_BASE}-postgres" \
            DATABASE_URL="$postgres_url" -- "$@"
        sessions=(sqlite postgres)
    fi
    for i in "${!sessions[@]}"; do
        wait_pass "${pass_pids[$i]}" || statuses[$i]=$?
    done
else
    store="SQLite"
    [[ -z "${DATABASE_URL:-}" ]] || store="the given DATABASE_URL"
    echo "test: pass 1 of $((run_postgres + 1)), run store on $store"
    start_pass sqlite "$SQLITE_BROKER_PORT" var/rabbitmq "$LOG_BASE" -- "$@"
    sessions=(sqlite)
    wait_pass "${pass_pids[0]}" || statuses[0]=$?
    if [[ $run_postgres == 1 ]]; then
        echo "test: pass 2 of 2, run store on PostgreSQL"
        start_pass postgres "$SQLITE_BROKER_PORT" var/rabbitmq "${LOG_BASE}-postgres" DATABASE_URL="$postgres_url" -- "$@"
        sessions+=(postgres)
        wait_pass "${pass_pids[1]}" || statuses[1]=$?
    fi
fi
for pid in "${printer_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
done
pass_pids=()
printer_pids=()
echo
# The worst exit status; 5 (pytest: no test collected) counts only when no session ran a test (a
# PYTEST_ARGS file with no broker test leaves the broker tier's sessions nothing to run).
status=5
for i in "${!sessions[@]}"; do
    s=${statuses[$i]:-0}
    summary "${sessions[$i]}" "$s"
    if (( s == 5 )); then
        continue
    fi
    if (( status == 5 || s > status )); then
        status=$s
    fi
done
exit $status
}

main "$@"
