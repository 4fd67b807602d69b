#!/usr/bin/env bash
# A throwaway MariaDB on loopback in a temporary directory: no system service, no fixed port.
#
#   source scripts/lib/mariadb.sh
#   rtd_mariadb_start            # sets RTD_MARIADB_DIR, RTD_MARIADB_PORT, RTD_MARIADB_SOCKET, RTD_TEST_MYSQL
#   ...
#   rtd_mariadb_stop             # stops it and removes the directory
#
# Or as a command (benchmarks and fault-injection tests):
#   scripts/lib/mariadb.sh start DIR     # prints the mysql:// URL
#   scripts/lib/mariadb.sh pause DIR     # stops mariadbd (SIGTERM, or SIGKILL with --kill), keeps its data
#   scripts/lib/mariadb.sh resume DIR    # starts it again on the same port
#   scripts/lib/mariadb.sh stop DIR      # stops it and removes DIR
#
# Installs mariadb-server from Debian if it is missing. The server runs as the current user with
# `--no-defaults`, so Debian's /etc/mysql configuration and /run/mysqld paths stay out of it.

rtd_mariadb_install() {
    if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb-install-db >/dev/null 2>&1; then
        echo "[mariadb] installing mariadb-server" >&2
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server mariadb-client >/dev/null
    fi
}

rtd_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# rtd_mariadb_start [DIR]: DIR defaults to a new temporary directory.
rtd_mariadb_start() {
    rtd_mariadb_install
    local dir="${1:-$(mktemp -d /tmp/rtd-mariadb.XXXXXX)}"
    mkdir -p "$dir/data"
    local port; port="$(rtd_free_port)"
    echo "$port" >"$dir/port"
    mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
        || { cat "$dir/install.log" >&2; return 1; }
    rtd_mariadb_launch "$dir" || return 1
    mariadb --no-defaults -uroot --socket="$dir/sock" -e "
        CREATE DATABASE IF NOT EXISTS rtd;
        CREATE USER IF NOT EXISTS 'rtd'@'127.0.0.1' IDENTIFIED BY 'rtd';
        CREATE USER IF NOT EXISTS 'rtd'@'localhost' IDENTIFIED BY 'rtd';
        GRANT ALL ON *.* TO 'rtd'@'127.0.0.1' WITH GRANT OPTION;
        GRANT ALL ON *.* TO 'rtd'@'localhost' WITH GRANT OPTION;" \
        || { cat "$dir/error.log" >&2; return 1; }
    export RTD_MARIADB_DIR="$dir" RTD_MARIADB_PORT="$port" RTD_MARIADB_SOCKET="$dir/sock"
    export RTD_TEST_MYSQL="mysql://rtd:rtd@127.0.0.1:$port/rtd"
    echo "[mariadb] up: $RTD_TEST_MYSQL (socket $dir/sock)" >&2
}

# rtd_mariadb_launch DIR: starts mariadbd on DIR's data and port and waits until it answers.
rtd_mariadb_launch() {
    local dir="$1" port; port="$(cat "$dir/port")"
    # Binary logging off (a single throwaway server), InnoDB durable (flush_log_at_trx_commit=1, the default).
    mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/sock" --port="$port" \
        --bind-address=127.0.0.1 --user="$(id -un)" --pid-file="$dir/mariadbd.pid" \
        --log-error="$dir/error.log" --innodb-buffer-pool-size=512M --innodb-log-file-size=256M \
        --max-connections=500 --skip-name-resolve </dev/null >/dev/null 2>&1 &
    local i
    for i in $(seq 1 600); do
        if mariadb --no-defaults -uroot --socket="$dir/sock" -e "SELECT 1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "[mariadb] did not start; see $dir/error.log" >&2
    tail -20 "$dir/error.log" >&2
    return 1
}

# rtd_mariadb_pause DIR [--kill]: stops the server process, keeping its data.
rtd_mariadb_pause() {
    local dir="$1" sig=TERM
    [ "${2:-}" = "--kill" ] && sig=KILL
    [ -f "$dir/mariadbd.pid" ] || return 0
    local pid; pid="$(cat "$dir/mariadbd.pid")"
    kill -s "$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/mariadbd.pid"
}

# rtd_mariadb_stop [DIR]
rtd_mariadb_stop() {
    local dir="${1:-${RTD_MARIADB_DIR:-}}"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -f "$dir/mariadbd.pid" ]; then
        local pid; pid="$(cat "$dir/mariadbd.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        start) rtd_mariadb_start "${2:-}"; echo "$RTD_TEST_MYSQL" ;;
        pause) rtd_mariadb_pause "${2:?directory}" "${3:-}" ;;
        resume) rtd_mariadb_launch "${2:?directory}" ;;
        stop) rtd_mariadb_stop "${2:?directory}" ;;
        *) echo "usage: $0 start [DIR] | pause DIR [--kill] | resume DIR | stop DIR" >&2; exit 2 ;;
    esac
fi
