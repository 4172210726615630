#!/usr/bin/env bash
# Manage a local, repo-private RabbitMQ node (Debian's rabbitmq-server).
#
#   infra/rabbitmq.sh start    start the node (idempotent), wait until AMQP works
#   infra/rabbitmq.sh stop     stop the node (idempotent)
#   infra/rabbitmq.sh status   print "running" (exit 0) or "stopped" (exit 3)
#   infra/rabbitmq.sh pid      print the node's Erlang VM (beam) pid (exit 3 when not running)
#   infra/rabbitmq.sh ctl ARGS rabbitmqctl ARGS against the node (e.g. `ctl list_queues name type leader`)
#
#   infra/rabbitmq.sh cluster start N    N nodes on this machine, AMQP on RABBITMQ_PORT, +1, ..., +N-1
#                                        (Erlang distribution on each port+20000), the 2nd..Nth join
#                                        the first as they boot (peer discovery from the config
#                                        file; `rabbitmqctl join_cluster` for a node that booted
#                                        alone); prints the
#                                        PIPELINE_BROKER_URL that lists them all. Idempotent: a node
#                                        already running and clustered is left as it is, a node that
#                                        was killed is started again and rejoins by itself.
#   infra/rabbitmq.sh cluster stop N     stop the N nodes
#   infra/rabbitmq.sh cluster status N   one line per node; exit 0 when all N run in one cluster
#   Cluster state lives under <repo>/var/rabbitmq-cluster-<first port>/ (one Erlang cookie for all).
#
# All node state (mnesia, logs, pid file, config, Erlang cookie) lives under
# <repo>/var/rabbitmq/ ; nothing is read from /etc/rabbitmq or written to
# /var/lib/rabbitmq or /var/log/rabbitmq.
#
# Environment knobs:
#   RABBITMQ_PORT       AMQP port on 127.0.0.1 (default 5672); Erlang
#                       distribution uses RABBITMQ_PORT+20000
#   RABBITMQ_NODENAME   node name (default pipeline-<port>@localhost)
#   RABBITMQ_VAR        base dir (default <repo>/var/rabbitmq; relative paths
#                       are taken relative to the repo root)
#   RABBITMQ_START_TIMEOUT  seconds to wait for AMQP on start (default 60)
#   RABBITMQ_BIND       address the AMQP listener binds (default 127.0.0.1); the
#                       start/status probe connects to 127.0.0.1, so use 0.0.0.0 to
#                       serve another address too (e.g. inside a network namespace)
#   RABBITMQ_ALLOW_REMOTE_GUEST  1: let `guest` log in from other hosts
#                       (loopback_users = none); default off (test namespaces only)
#   RABBITMQ_STOP_MODE  stop: "graceful" (default: rabbitmqctl stop, then signals)
#                       or "force" (SIGTERM, SIGKILL after 10 s; no rabbitmqctl VM
#                       to boot: for throwaway test nodes, whose queues nobody keeps)
#   PYTHON              interpreter used for the AMQP probe (default
#                       <repo>/.venv/bin/python, else python3). pika is used
#                       when importable, otherwise a stdlib AMQP handshake.
#
# Exit codes: 0 ok, 1 failure, 2 rabbitmq-server (or python) not installed,
#             3 status: stopped.
set -euo pipefail
CALLER_UMASK="$(umask)"
umask 077  # what this script and the node create is owner-only (see private_mkdir)

SERVER=rabbitmq
# shellcheck source=infra/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

RABBIT_BIN_DIR="/usr/lib/rabbitmq/bin"
SERVER_BIN="$RABBIT_BIN_DIR/rabbitmq-server"
CTL_BIN="$RABBIT_BIN_DIR/rabbitmqctl"

PORT="$(checked_port RABBITMQ_PORT "${RABBITMQ_PORT:-5672}" 45535 "dist port is port+20000")"
DIST_PORT=$(( PORT + 20000 ))
BIND="${RABBITMQ_BIND:-127.0.0.1}"
NODE="${RABBITMQ_NODENAME:-pipeline-${PORT}@localhost}"
[[ "$NODE" == *@* ]] || NODE="${NODE}@localhost"

VAR="$(in_repo "${RABBITMQ_VAR:-var/rabbitmq}")"
START_TIMEOUT="${RABBITMQ_START_TIMEOUT:-60}"
STOP_MODE="${RABBITMQ_STOP_MODE:-graceful}"
[[ "$STOP_MODE" == graceful || "$STOP_MODE" == force ]] || { echo "rabbitmq: RABBITMQ_STOP_MODE must be graceful or force, not '$STOP_MODE'" >&2; exit 1; }

URL="amqp://guest:guest@127.0.0.1:${PORT}/"
LOG_DIR="$VAR/log"
PID_FILE="$VAR/${NODE}.pid"
CONF_FILE="$VAR/${NODE%%@*}.conf"
PLUGINS_FILE="$VAR/enabled_plugins"
ENV_CONF_FILE="$VAR/rabbitmq-env.conf"
NODE_LOG="$LOG_DIR/${NODE}.log"
OUT_LOG="$LOG_DIR/${NODE}.stdout.log"
ERR_LOG="$LOG_DIR/${NODE}.stderr.log"
CTL_LOG="$LOG_DIR/${NODE}.rabbitmqctl.log"
MARKER="-pipeline_rabbitmq_node"   # harmless extra erl arg to find our beam

# --- environment shared by the server and by rabbitmqctl -------------------
export HOME="$VAR"                                  # .erlang.cookie lives here
export RABBITMQ_NODENAME="$NODE"
export RABBITMQ_NODE_PORT="$PORT"
export RABBITMQ_NODE_IP_ADDRESS="$BIND"
export RABBITMQ_DIST_PORT="$DIST_PORT"
export RABBITMQ_MNESIA_BASE="$VAR/mnesia"
export RABBITMQ_LOG_BASE="$LOG_DIR"
export RABBITMQ_PID_FILE="$PID_FILE"
export RABBITMQ_ENABLED_PLUGINS_FILE="$PLUGINS_FILE"
export RABBITMQ_CONFIG_FILE="$CONF_FILE"
export RABBITMQ_ADVANCED_CONFIG_FILE="$VAR/advanced.config"   # never created
export RABBITMQ_CONF_ENV_FILE="$ENV_CONF_FILE"                # not /etc/rabbitmq/rabbitmq-env.conf
export RABBITMQ_ALLOW_INPUT=""
export ERL_CRASH_DUMP="$LOG_DIR/erl_crash-${NODE}.dump"
export ERL_EPMD_ADDRESS="127.0.0.1"
CALLER_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-}"   # as given, for the nodes of a cluster
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$CALLER_ERL_ARGS $MARKER $NODE"
unset RABBITMQ_ENV_LOADED NOTIFY_SOCKET 2>/dev/null || true

# --- python / AMQP probe ----------------------------------------------------
PY=""
pick_python() {
    local cand="${PYTHON:-}"
    if [[ -n "$cand" ]]; then
        # relative paths like .venv/bin/python are taken relative to the repo
        if [[ "$cand" == */* && "$cand" != /* && ! -x "$cand" && -x "$REPO_ROOT/$cand" ]]; then
            cand="$REPO_ROOT/$cand"
        fi
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        cand="$REPO_ROOT/.venv/bin/python"
    else
        cand="python3"
    fi
    if ! command -v "$cand" >/dev/null 2>&1; then
        err "no python interpreter found (tried '${cand}'); set PYTHON to a python with pika"
        exit 2
    fi
    PY="$cand"
}

# probe MODE PORT TIMEOUT WATCH_PID
#   MODE amqp: exit 0 once an AMQP connection (guest/guest, vhost /) succeeds,
#              1 on timeout, 4 if WATCH_PID (non-zero) died first.
#   MODE tcp:  exit 0 if something accepts TCP on the port, else 1.
read -r -d '' PROBE_PY <<'PYEOF' || true
import os, socket, struct, sys, time
mode, port, timeout, watch = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
HOST = "127.0.0.1"

def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False

try:
    import logging
    logging.disable(logging.CRITICAL)   # pika logs every failed attempt
    import pika
except Exception:
    pika = None

def check_pika():
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host=HOST, port=port, connection_attempts=1, socket_timeout=1,
        stack_timeout=3))   # default 15 s would stall on a hung broker
    conn.close()

def check_raw():
    # Minimal AMQP 0-9-1 handshake (used only when pika is not importable).
    s = socket.create_connection((HOST, port), timeout=1)
    s.settimeout(1)
    buf = [b""]
    def frame():
        while True:
            b = buf[0]
            if len(b) >= 7:
                ftype, _ch, size = struct.unpack(">BHI", b[:7])
                if len(b) >= size + 8:
                    payload, end = b[7:7 + size], b[7 + size]
                    buf[0] = b[size + 8:]
                    if end != 0xCE:
                        raise IOError("bad frame end")
                    return ftype, payload
            d = s.recv(65536)
            if not d:
                raise IOError("connection closed by server")
            buf[0] += d
    def method(expect):
        while True:
            ftype, p = frame()
            if ftype == 8:          # heartbeat
                continue
            if ftype != 1 or struct.unpack(">HH", p[:4]) != expect:
                raise IOError("unexpected frame")
            return p[4:]
    def send(cls, mid, args):
        p = struct.pack(">HH", cls, mid) + args
        s.sendall(struct.pack(">BHI", 1, 0, len(p)) + p + b"\xce")
    sstr = lambda b: struct.pack(">B", len(b)) + b
    lstr = lambda b: struct.pack(">I", len(b)) + b
    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        method((10, 10))                                    # connection.start
        send(10, 11, lstr(b"") + sstr(b"PLAIN") + lstr(b"\x00guest\x00guest") + sstr(b"en_US"))
        ch_max, frame_max, _hb = struct.unpack(">HIH", method((10, 30))[:8])   # tune
        send(10, 31, struct.pack(">HIH", ch_max, frame_max, 0))
        send(10, 40, sstr(b"/") + sstr(b"") + b"\x00")      # connection.open
        method((10, 41))                                    # open-ok
        send(10, 50, struct.pack(">H", 200) + sstr(b"") + struct.pack(">HH", 0, 0))
        method((10, 51))                                    # close-ok
    finally:
        s.close()

def check_tcp():
    socket.create_connection((HOST, port), timeout=1).close()

check = check_tcp if mode == "tcp" else (check_pika if pika is not None else check_raw)
deadline = time.monotonic() + timeout
while True:
    try:
        check()
        sys.exit(0)
    except Exception:
        pass
    if watch and not pid_alive(watch):
        sys.exit(4)
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.5)
PYEOF

probe() {  # probe MODE TIMEOUT [WATCH_PID]
    "$PY" -c "$PROBE_PY" "$1" "$PORT" "$2" "${3:-0}" </dev/null 9>&-
}

# --- process helpers ----------------------------------------------------------
# Processes belonging to our node: a beam.smp whose argv holds our node name
# and "-home <our var dir>" (so a same-named node of another clone is left
# alone), and the rabbitmq-server shell wrapper started with our environment.
# our_pids [beam]  -- with "beam", only the beam.smp processes.
our_pids() {
    local only="${1:-}" d pid a envs has_node has_home prev
    local -a args
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        args=()
        mapfile -d '' -t args 2>/dev/null < "$d/cmdline" || continue
        (( ${#args[@]} )) || continue
        if [[ "${args[0]}" == *beam* ]]; then
            has_node=0 has_home=0 prev=""
            for a in "${args[@]}"; do
                [[ "$a" == "$NODE" ]] && has_node=1
                [[ "$prev" == "-home" && "$a" == "$VAR" ]] && has_home=1
                prev="$a"
            done
            (( has_node && has_home )) && echo "$pid"
        elif [[ -z "$only" && "${args[*]}" == *"/rabbitmq-server"* ]]; then
            envs="$(tr '\0' '\n' 2>/dev/null < "$d/environ" || true)"
            if grep -qxF "RABBITMQ_NODENAME=$NODE" <<<"$envs" && grep -qxF "HOME=$VAR" <<<"$envs"; then
                echo "$pid"
            fi
        fi
    done
    return 0
}

pidfile_pid() {
    local p=""
    [[ -f "$PID_FILE" ]] && read -r p 2>/dev/null < "$PID_FILE" || true
    [[ "$p" =~ ^[0-9]+$ ]] && echo "$p"
    return 0
}

all_node_pids() {  # our_pids plus the pid-file pid if it is (still) a beam
    local p a
    p="$(pidfile_pid)"
    {
        our_pids
        if [[ -n "$p" ]] && pid_alive "$p"; then
            a="$(tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" || true)"
            [[ "$a" == *beam* ]] && echo "$p"
        fi
    } | sort -un
}

# Does one of our beam processes own the LISTEN socket on 127.0.0.1:PORT?
# 0 = yes, 1 = no, 2 = cannot tell (no /proc/net/tcp).
port_owned_by_us() {
    [[ -r /proc/net/tcp ]] || return 2
    local hexport pid fd link a
    local -a inodes
    printf -v hexport '%04X' "$PORT"
    mapfile -t inodes < <(awk -v p=":$hexport" \
        '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    (( ${#inodes[@]} )) || return 1
    for pid in $(our_pids beam); do
        for fd in /proc/"$pid"/fd/*; do
            link="$(readlink "$fd" 2>/dev/null)" || continue
            for a in "${inodes[@]}"; do
                [[ "$link" == "socket:[$a]" ]] && return 0
            done
        done
    done
    return 1
}

# all_node_pids plus their descendants (erl_child_setup, port programs, ...)
node_tree() {
    local -A kids=()
    local d st pid ppid
    for d in /proc/[0-9]*; do
        st="$(cat "$d/stat" 2>/dev/null)" || continue
        pid="${d#/proc/}"
        st="${st##*) }"          # "<state> <ppid> ..."
        ppid="${st#* }"; ppid="${ppid%% *}"
        kids[$ppid]+=" $pid"
    done
    local -a queue
    mapfile -t queue < <(all_node_pids)
    local -A seen=()
    while (( ${#queue[@]} )); do
        pid="${queue[0]}"; queue=("${queue[@]:1}")
        [[ -n "${seen[$pid]:-}" ]] && continue
        seen[$pid]=1
        echo "$pid"
        # shellcheck disable=SC2206
        [[ -n "${kids[$pid]:-}" ]] && queue+=(${kids[$pid]})
    done
    return 0
}

epmd_pids() {
    local d c
    for d in /proc/[0-9]*; do
        read -r c 2>/dev/null < "$d/comm" || continue
        [[ "$c" == epmd ]] && echo "${d#/proc/}"
    done
    return 0
}

# Dead processes stay visible in ps as <defunct> until init reaps them; give
# init a moment so "ps | grep beam|epmd" is clean right after stop.
wait_reaped() {
    local deadline=$(( SECONDS + 5 )) p left
    while :; do
        left=0
        for p in "$@"; do [[ -e "/proc/$p" ]] && ! pid_alive "$p" && left=1; done
        (( left )) || return 0
        (( SECONDS >= deadline )) && return 0
        sleep 0.2
    done
}

wait_gone() {  # wait_gone SECONDS PID... ; returns 0 if all gone
    local deadline=$(( SECONDS + $1 )) p alive
    shift
    while :; do
        alive=0
        for p in "$@"; do pid_alive "$p" && alive=1; done
        (( alive )) || return 0
        (( SECONDS >= deadline )) && return 1
        sleep 0.5
    done
}

epmd_cleanup() {
    # epmd is shared by all Erlang nodes on the machine; "epmd -kill" refuses
    # while other nodes are still registered, so this is safe.
    command -v epmd >/dev/null 2>&1 || return 0
    local names
    names="$(timeout 10 epmd -names </dev/null 2>/dev/null 9>&-)" || true
    if ! grep -q '^name ' <<<"$names"; then
        timeout 10 epmd -kill </dev/null >/dev/null 2>&1 9>&- || true
    fi
}

# Stop our node. $1 = "graceful" (try rabbitmqctl first) or "force".
stop_node() {
    local how="$1" p
    local -a pids all=() epmds=()
    mapfile -t pids < <(node_tree)
    all+=("${pids[@]}")
    if (( ${#pids[@]} )); then
        if [[ "$how" == graceful ]]; then
            if (cd "$VAR" && timeout 30 "$CTL_BIN" -n "$NODE" stop) </dev/null >"$CTL_LOG" 2>&1 9>&-; then
                wait_gone 15 "${pids[@]}" || true
            else
                err "rabbitmqctl stop failed (see $CTL_LOG); killing the node"
            fi
        fi
        local round
        for round in TERM KILL; do
            mapfile -t pids < <(node_tree; for p in "${all[@]}"; do pid_alive "$p" && echo "$p"; done)
            (( ${#pids[@]} )) || break
            all+=("${pids[@]}")
            kill "-$round" "${pids[@]}" 2>/dev/null || true
            if [[ "$round" == TERM ]]; then wait_gone 10 "${pids[@]}" || true
            else wait_gone 5 "${pids[@]}" || true; fi
        done
    fi
    rm -f "$PID_FILE"
    mapfile -t epmds < <(epmd_pids)
    epmd_cleanup
    wait_reaped "${all[@]}" "${epmds[@]}"
    mapfile -t pids < <(all_node_pids)
    if (( ${#pids[@]} )); then
        err "could not stop node $NODE (pids: ${pids[*]})"
        return 1
    fi
    return 0
}

show_logs() {
    {
        if [[ -s "$NODE_LOG" ]]; then
            echo "----- last 30 lines of $NODE_LOG -----"
            tail -n 30 "$NODE_LOG"
        else
            echo "----- (no node log at $NODE_LOG) -----"
        fi
        local f
        for f in "$OUT_LOG" "$ERR_LOG"; do
            if [[ -s "$f" ]]; then
                echo "----- last 30 lines of $f -----"
                tail -n 30 "$f"
            fi
        done
    } >&2
}

prepare_var() {
    private_mkdir "$VAR" "$LOG_DIR" "$RABBITMQ_MNESIA_BASE"
    printf '[].\n' > "$PLUGINS_FILE"
    : > "$ENV_CONF_FILE"
    cat > "$CONF_FILE" <<EOF
# Generated by infra/rabbitmq.sh -- do not edit, rewritten on every start.
listeners.tcp.default = ${BIND}:${PORT}
distribution.listener.interface = 127.0.0.1
$( [[ "${RABBITMQ_ALLOW_REMOTE_GUEST:-0}" == 1 ]] && echo "loopback_users = none" || echo "loopback_users.guest = true" )
disk_free_limit.absolute = 50MB
consumer_timeout = 3600000
heartbeat = 30
log.console = false
log.file.level = info
$( [[ -n "${RABBITMQ_CLUSTER_SEED:-}" ]] && printf '%s\n' \
    "cluster_formation.peer_discovery_backend = classic_config" \
    "cluster_formation.classic_config.nodes.1 = ${RABBITMQ_CLUSTER_SEED}" )
EOF
    local cookie="$VAR/.erlang.cookie"
    if [[ ! -s "$cookie" ]]; then
        rm -f "$cookie"
        (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' > "$cookie")
    fi
    chmod 400 "$cookie"
}

launch() {
    # New session (setsid) so terminal signals don't reach it, nohup for SIGHUP,
    # every fd redirected to files under var/ (and any other inherited fds
    # closed) so no caller pipe is held open by the server, epmd or children.
    (
        cd "$VAR"
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )); then
                eval "exec ${fd}>&-" 2>/dev/null || true
            fi
        done
        exec setsid nohup "$SERVER_BIN" </dev/null >"$OUT_LOG" 2>"$ERR_LOG"
    ) </dev/null >/dev/null 2>&1 &
    LAUNCH_PID=$!
}

# The node's folders and files are owner-only (0700/0600, like everything of ours under var/: its
# logs, and the users' password hashes in mnesia); the folders above them keep the caller's umask.
private_mkdir() {
    local d
    for d in "$@"; do
        (umask "$CALLER_UMASK" && mkdir -p "$(dirname "$d")")
        mkdir -p "$d"
    done
}

lock() {
    private_mkdir "$VAR"
    exec 9>"$VAR/.${NODE}.lock"
    if ! flock -w 180 9; then
        err "timed out waiting for another infra/rabbitmq.sh on node $NODE"
        exit 1
    fi
}

# --- subcommands --------------------------------------------------------------
cmd_start() {
    if [[ ! -x "$SERVER_BIN" ]]; then
        err "$SERVER_BIN not found: install Debian's rabbitmq-server (apt-get update && apt-get install -y rabbitmq-server) or set PIPELINE_BROKER_URL to an existing broker"
        exit 2
    fi
    pick_python
    lock

    if probe amqp 0; then
        if port_owned_by_us; [[ $? -ne 1 ]]; then
            say "node $NODE already running on $URL"
        else
            say "a broker not started from $VAR already accepts AMQP on $URL; using it"
        fi
        exit 0
    fi

    # Stale / half-dead state from a previous run: pid file without a process,
    # or a beam of ours that does not answer AMQP. Clean up and start fresh.
    local stale_pid
    stale_pid="$(pidfile_pid)"
    if [[ -n "$stale_pid" ]] && ! pid_alive "$stale_pid"; then
        say "removing stale pid file $PID_FILE (pid $stale_pid is gone)"
        rm -f "$PID_FILE"
    fi
    if [[ -n "$(all_node_pids)" ]]; then
        say "node $NODE has processes but does not answer AMQP; killing them"
        stop_node force || exit 1
    fi

    if probe tcp 0; then
        err "port 127.0.0.1:$PORT is already in use by another process (not an AMQP broker we can log into); pick another RABBITMQ_PORT"
        exit 1
    fi

    prepare_var
    local t0=$SECONDS rc=0
    launch
    probe amqp "$START_TIMEOUT" "$LAUNCH_PID" || rc=$?
    if (( rc == 4 )); then
        # The launcher is gone; if our node lives on anyway (e.g. setsid had
        # to fork), keep waiting on its processes for the remaining time.
        local watch="" left i
        local -a cand
        for i in 1 2 3 4; do
            mapfile -t cand < <(our_pids)
            watch="${cand[0]:-}"
            [[ -n "$watch" ]] && break
            sleep 0.5
        done
        left=$(( START_TIMEOUT - (SECONDS - t0) ))
        if [[ -n "$watch" ]] && (( left > 0 )); then
            rc=0
            probe amqp "$left" "$watch" || rc=$?
        fi
    fi
    if (( rc == 0 )); then
        if port_owned_by_us; [[ $? -ne 1 ]]; then
            say "node $NODE ready on $URL"
            exit 0
        fi
        err "another broker grabbed 127.0.0.1:$PORT while node $NODE was starting; pick another RABBITMQ_PORT"
        show_logs
        stop_node force >/dev/null 2>&1 || true
        exit 1
    fi
    if (( rc == 4 )); then
        err "node $NODE exited during startup (after $(( SECONDS - t0 ))s)"
    else
        err "node $NODE did not accept AMQP connections within ${START_TIMEOUT}s"
    fi
    show_logs
    stop_node force >/dev/null 2>&1 || true
    exit 1
}

cmd_stop() {
    lock
    if [[ -z "$(all_node_pids)" ]]; then
        rm -f "$PID_FILE"
        local -a epmds
        mapfile -t epmds < <(epmd_pids)
        epmd_cleanup
        wait_reaped "${epmds[@]}"
        say "node $NODE not running"
        exit 0
    fi
    if stop_node "$STOP_MODE"; then
        say "node $NODE stopped"
        exit 0
    fi
    exit 1
}

cmd_status() {
    pick_python
    if probe amqp 0; then
        echo "running"
        exit 0
    fi
    echo "stopped"
    exit 3
}

cmd_pid() {
    local p
    p="$(our_pids beam | head -n 1)"
    if [[ -z "$p" ]]; then
        echo "stopped" >&2
        exit 3
    fi
    echo "$p"
}

ctl() {  # rabbitmqctl against this node, with its cookie (HOME) and a time bound (RABBITMQ_CTL_TIMEOUT, 60 s)
    (cd "$VAR" && timeout "${RABBITMQ_CTL_TIMEOUT:-60}" "$CTL_BIN" -n "$NODE" "$@") </dev/null 9>&-
}

# join FIRST_NODE: make this (running) node a member of FIRST_NODE's cluster, unless it is one.
cmd_join() {
    local first="$1"
    if ctl cluster_status 2>/dev/null | grep -qF "$first"; then
        say "node $NODE already in the cluster of $first"
        exit 0
    fi
    {
        ctl stop_app && ctl reset && ctl join_cluster "$first" && ctl start_app
    } >>"$CTL_LOG" 2>&1 || { err "node $NODE could not join $first (see $CTL_LOG)"; exit 1; }
    ctl await_startup >>"$CTL_LOG" 2>&1 || true
    say "node $NODE joined the cluster of $first"
}

cmd_cluster() {
    local action="${1:-}" count="${2:-3}" i p rc=0
    if ! [[ "$count" =~ ^[0-9]+$ ]] || (( count < 1 || count > 9 )); then
        err "cluster: N must be 1..9 (got '$count')"
        exit 64
    fi
    local cvar="${RABBITMQ_VAR:-var/rabbitmq-cluster-${PORT}}"
    local first="pipeline-${PORT}@localhost"
    local -a ports=() urls=()
    for (( i = 0; i < count; i++ )); do
        ports+=( $(( PORT + i )) )
        urls+=( "amqp://guest:guest@127.0.0.1:$(( PORT + i ))/%2F" )
    done
    node_env() {  # the environment of one node of the cluster
        # (not this shell's marker: each node's beam must name its own node only)
        env -u RABBITMQ_NODENAME RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$CALLER_ERL_ARGS" \
            RABBITMQ_PORT="$1" RABBITMQ_VAR="$cvar" "$0" "${@:2}"
    }
    case "$action" in
        start)
            # The first node creates the Erlang cookie the others share; the rest start side by side
            # and join it as they boot (peer discovery from the config file, with RabbitMQ's own
            # lock against two of them forming clusters of their own). `join` then only confirms
            # it (one CLI call), and joins by hand (five more, each an Erlang VM: minutes on a
            # loaded machine) a node that booted alone, such as one kept from an earlier start.
            node_env "${ports[0]}" start || exit 1
            local -a pids=()
            for p in "${ports[@]:1}"; do
                RABBITMQ_CLUSTER_SEED="$first" node_env "$p" start & pids+=($!)
            done
            for p in "${pids[@]}"; do wait "$p" || rc=1; done
            (( rc == 0 )) || { err "cluster: a node did not start"; exit 1; }
            for p in "${ports[@]:1}"; do
                node_env "$p" join "$first" || exit 1
            done
            say "cluster of ${count} ready: PIPELINE_BROKER_URL=$(IFS=,; echo "${urls[*]}")"
            ;;
        stop)
            for p in "${ports[@]}"; do node_env "$p" stop || rc=1; done
            exit $rc
            ;;
        status)
            for p in "${ports[@]}"; do
                if node_env "$p" status >/dev/null 2>&1; then
                    echo "pipeline-${p}@localhost running"
                else
                    echo "pipeline-${p}@localhost stopped"; rc=3
                fi
            done
            exit $rc
            ;;
        *)
            echo "usage: $0 cluster start|stop|status N" >&2
            exit 64
            ;;
    esac
}

case "${1:-}" in
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    status)  cmd_status ;;
    pid)     cmd_pid ;;
    ctl)     shift; ctl "$@" ;;
    join)    cmd_join "${2:?usage: $0 join NODE}" ;;
    cluster) shift; cmd_cluster "$@" ;;
    *)
        echo "usage: $0 start|stop|status|pid|ctl ARGS... | cluster start|stop|status N" >&2
        exit 64
        ;;
esac
