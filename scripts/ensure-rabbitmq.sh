#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers AMQP on CSEXT_AMQP_HOST:CSEXT_AMQP_PORT
# (default 127.0.0.1:5672), so `make run` and `make test` work on a fresh machine.
#
# Reachable: nothing to do. Otherwise, for a local broker only: install rabbitmq-server when it
# is missing (root: apt-get, non-interactive; anyone else: print the command and fail), start it
# detached, wait for `rabbitmqctl await_startup` and for the AMQP port. Idempotent, never reads
# stdin (CI has none), one line of output per step. Enables nothing beyond the stock server; the
# stock `guest` user may log in from loopback, which is what csext's defaults use.
#
# Environment: CSEXT_AMQP_HOST, CSEXT_AMQP_PORT, CSEXT_RABBITMQ_STARTUP_TIMEOUT (seconds, 120).
set -euo pipefail

HOST="${CSEXT_AMQP_HOST:-127.0.0.1}"
PORT="${CSEXT_AMQP_PORT:-5672}"
STARTUP_TIMEOUT="${CSEXT_RABBITMQ_STARTUP_TIMEOUT:-120}"
PORT_TIMEOUT=30
# Debian puts the RabbitMQ tools in /usr/sbin, which is not on a normal user's PATH.
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

step() { printf 'ensure-rabbitmq: %s\n' "$*"; }
die() {
    printf 'ensure-rabbitmq: error: %s\n' "$*" >&2
    exit 1
}

# Erlang needs HOME for its cookie; CI and `docker exec` shells may not set it.
ensure_home() {
    if [[ -n "${HOME:-}" ]]; then
        return
    fi
    HOME="$(getent passwd "$(id -u)" | cut -d: -f6 || true)"
    if [[ -z "$HOME" || ! -d "$HOME" ]]; then
        HOME="${TMPDIR:-/tmp}"
    fi
    export HOME
    step "HOME was unset; using HOME=$HOME"
}

# Send the AMQP 0-9-1 protocol header; a broker answers with a method frame (type byte 1).
# Runs in a child bash under `timeout`, because a connect to a silent host can hang.
amqp_reachable() {
    # shellcheck disable=SC2016 # expanded by the child bash
    local probe='exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "AMQP\0\0\11\1" >&3
        IFS= read -r -N 1 -t 5 -u 3 reply || exit 1
        [[ "$reply" == "$(printf "\1")" ]]'
    timeout 10 bash -c "$probe" probe "$HOST" "$PORT" </dev/null >/dev/null 2>&1
}

is_local_host() {
    [[ "$HOST" == localhost || "$HOST" == 127.* || "$HOST" == ::1 ]]
}

is_root() { [[ "$(id -u)" == 0 ]]; }

install_command() {
    if command -v apt-get >/dev/null 2>&1; then
        echo "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server"
    elif command -v dnf >/dev/null 2>&1; then
        echo "sudo dnf install -y rabbitmq-server && sudo systemctl start rabbitmq-server"
    elif command -v brew >/dev/null 2>&1; then
        echo "brew install rabbitmq && brew services start rabbitmq"
    else
        echo "install RabbitMQ 3.x from https://www.rabbitmq.com/docs/download and start it"
    fi
}

ensure_installed() {
    if command -v rabbitmq-server >/dev/null 2>&1; then
        return
    fi
    if ! is_root; then
        die "rabbitmq-server is not installed. Run: $(install_command)   (then run make again)"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "rabbitmq-server is not installed and apt-get is missing. Run: $(install_command)"
    step "installing rabbitmq-server: apt-get update && apt-get install -y rabbitmq-server"
    apt-get update -q </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server </dev/null
}

node_running() {
    timeout 30 rabbitmq-diagnostics -q ping </dev/null >/dev/null 2>&1
}

# Who may start the node: root and the rabbitmq user (the packaged wrappers switch to it),
# or whoever owns the installation (Homebrew, a tarball in $HOME).
may_start() {
    local exe
    exe="$(command -v rabbitmq-server)"
    is_root || [[ "$(id -un)" == rabbitmq || -O "$(readlink -f "$exe")" ]]
}

systemd_manages_rabbitmq() {
    [[ -d /run/systemd/system ]] && systemctl cat rabbitmq-server.service >/dev/null 2>&1
}

start_node() {
    if ! may_start; then
        if systemd_manages_rabbitmq; then
            die "RabbitMQ is installed but not running. Run: sudo systemctl start rabbitmq-server"
        fi
        die "RabbitMQ is installed but not running. Run: sudo rabbitmq-server -detached"
    fi
    if is_root && systemd_manages_rabbitmq; then
        step "starting RabbitMQ: systemctl start rabbitmq-server"
        systemctl start rabbitmq-server </dev/null
        return
    fi
    local log="${TMPDIR:-/tmp}/csext-rabbitmq-start.log"
    step "starting RabbitMQ: rabbitmq-server -detached (output in $log)"
    # The detached node must not hold our stdout/stderr open, or `make test | tee` never ends.
    rabbitmq-server -detached </dev/null >>"$log" 2>&1 ||
        die "rabbitmq-server -detached failed; see $log and /var/log/rabbitmq/"
}

await_startup() {
    step "waiting up to ${STARTUP_TIMEOUT}s for RabbitMQ to boot: rabbitmqctl await_startup"
    local deadline=$((SECONDS + STARTUP_TIMEOUT)) left output=""
    while ((SECONDS < deadline)); do
        left=$((deadline - SECONDS))
        if output="$(timeout "$((left + 5))" rabbitmqctl --timeout "$left" await_startup \
            </dev/null 2>&1)"; then
            return
        fi
        sleep 2 # the node may not have registered with epmd yet; ask again
    done
    printf '%s\n' "$output" | tail -n 5 >&2
    die "RabbitMQ did not finish booting within ${STARTUP_TIMEOUT}s; see /var/log/rabbitmq/"
}

await_port() {
    step "waiting up to ${PORT_TIMEOUT}s for AMQP on $HOST:$PORT"
    local deadline=$((SECONDS + PORT_TIMEOUT))
    until amqp_reachable; do
        ((SECONDS < deadline)) ||
            die "RabbitMQ runs but nothing answers AMQP on $HOST:$PORT; check its listeners"
        sleep 1
    done
}

check_guest_login() {
    step "checking that the guest user can log in (rabbitmqctl authenticate_user guest)"
    if ! timeout 30 rabbitmqctl -q authenticate_user guest guest </dev/null >/dev/null 2>&1; then
        printf 'ensure-rabbitmq: warning: guest/guest cannot log in; tests use it. Fix: %s\n' \
            "rabbitmqctl add_user guest guest && rabbitmqctl set_permissions guest '.*' '.*' '.*'" >&2
    fi
}

main() {
    if amqp_reachable; then
        step "RabbitMQ answers AMQP on $HOST:$PORT; nothing to do"
        return
    fi
    is_local_host ||
        die "nothing answers AMQP on $HOST:$PORT, which is not this machine; start that broker"
    step "nothing answers AMQP on $HOST:$PORT; bringing up a local RabbitMQ"
    ensure_home
    ensure_installed
    if node_running; then
        step "a RabbitMQ node is already running; not starting another"
    else
        start_node
    fi
    await_startup
    await_port
    check_guest_login
    step "RabbitMQ is up on $HOST:$PORT"
}

main "$@"
