# Sourced by infra/postgres.sh and infra/rabbitmq.sh, which each run a server of their own under
# var/: the repository's root, messages prefixed with the server's name (SERVER, set before
# sourcing), a checked port, a folder below the root, a live process.

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

say() { echo "$SERVER: $*"; }
err() { echo "$SERVER: $*" >&2; }

# checked_port VARIABLE VALUE MAX [WHY]: VALUE, or exit 1 unless it is a port number from 1 to MAX.
checked_port() {
    local variable="$1" value="$2" max="$3" why="${4:+, $4}"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || (( value < 1 || value > max )); then
        err "invalid $variable '$value' (need 1..$max$why)"
        exit 1
    fi
    echo "$value"
}

# in_repo PATH: PATH, read from the repository's root when it is relative.
in_repo() {
    if [[ "$1" == /* ]]; then echo "$1"; else echo "$REPO_ROOT/$1"; fi
}

pid_alive() {  # running (not zombie) process?
    local pid="$1" stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != "Z" && "${stat:0:1}" != "X" ]]
}
