#!/usr/bin/env bash
# A local cluster on loopback: N dashboard-server instances + HAProxy (deploy/haproxy/haproxy.cfg)
# + one throwaway MariaDB, started and stopped cleanly.
#
#   scripts/cluster.sh start [N] [DIR]   # N = 3 instances (1..9), DIR = /tmp/rtd-cluster; prints the URLs
#   scripts/cluster.sh stop [DIR]        # stops HAProxy, the instances (SIGTERM: they drain) and MariaDB
#
# Ports (override with the environment): HAProxy cleartext 4002 (RTD_HAPROXY_PORT), TLS 4443
# (RTD_HAPROXY_TLS_PORT), stats 8404 (RTD_HAPROXY_STATS_PORT, loopback only); instances
# 4101, 4102, … (RTD_CLUSTER_BASE_PORT). RTD_STORE=mysql://… uses an existing database instead of
# starting one. RTD_SERVER_BIN picks the server binary (default: the release build, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
cmd="${1:-}"

log() { printf '[cluster] %s\n' "$*" >&2; }

wait_port() {  # wait_port PORT SECONDS
    local deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { log "port $1 did not open"; return 1; }
        sleep 0.1
    done
}

case "$cmd" in
start)
    n="${2:-3}"; dir="${3:-/tmp/rtd-cluster}"
    [[ "$n" =~ ^[1-9]$ ]] || { echo "N must be 1..9" >&2; exit 2; }
    [ -e "$dir/haproxy.pid" ] && { echo "a cluster is already running in $dir (scripts/cluster.sh stop $dir)" >&2; exit 1; }
    mkdir -p "$dir"
    command -v haproxy >/dev/null || { log "installing haproxy"; apt-get install -y -qq haproxy >/dev/null; }
    bin="${RTD_SERVER_BIN:-$ROOT/.build/release/dashboard-server}"
    if [ ! -x "$bin" ]; then log "building the release server"; swift build -c release --product dashboard-server >/dev/null; fi
    store="${RTD_STORE:-}"
    if [ -z "$store" ]; then
        store="$(bash scripts/lib/mariadb.sh start "$dir/db" | tail -1)"
        echo "$dir/db" >"$dir/own-db"
    fi
    base="${RTD_CLUSTER_BASE_PORT:-4101}"
    backends=()
    for i in $(seq 1 "$n"); do backends+=("127.0.0.1:$((base + i - 1))"); done
    for i in $(seq 1 "$n"); do
        port=$((base + i - 1))
        # Every instance follows the others, so any of them serves the whole fleet's dashboard.
        peers=""
        for b in "${backends[@]}"; do [ "$b" = "127.0.0.1:$port" ] || peers="${peers:+$peers,}http://$b"; done
        # Credentials: RTD_AUTH_FILE (and RTD_PEER_TOKEN, a view secret the instances follow each
        # other with); without them the instances run in development mode (--no-auth).
        auth=(--no-auth); [ -n "${RTD_AUTH_FILE:-}" ] && auth=(--auth-file "$RTD_AUTH_FILE")
        "$bin" --host 127.0.0.1 --port "$port" --tls-port 0 --store "$store" --peers "$peers" --log-level warning "${auth[@]}" \
            >"$dir/instance-$i.log" 2>&1 &
        echo $! >"$dir/instance-$i.pid"
    done
    for b in "${backends[@]}"; do wait_port "${b##*:}" 60; done
    # HAProxy: the shipped config with one `server` line per instance in each backend.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    cat "$dir/cert.pem" "$dir/key.pem" >"$dir/haproxy.pem"
    python3 scripts/lib/haproxy_config.py "$dir/haproxy.cfg" "${backends[@]}"
    export RTD_HAPROXY_BIND="127.0.0.1:${RTD_HAPROXY_PORT:-4002}"
    export RTD_HAPROXY_TLS_BIND="127.0.0.1:${RTD_HAPROXY_TLS_PORT:-4443}"
    export RTD_HAPROXY_STATS="127.0.0.1:${RTD_HAPROXY_STATS_PORT:-8404}"
    export RTD_HAPROXY_CERT="$dir/haproxy.pem"
    haproxy -c -q -f "$dir/haproxy.cfg"
    haproxy -f "$dir/haproxy.cfg" -D -p "$dir/haproxy.pid" >"$dir/haproxy.log" 2>&1
    wait_port "${RTD_HAPROXY_PORT:-4002}" 10
    echo "store      $store"
    for i in $(seq 1 "$n"); do echo "instance $i http://${backends[$((i - 1))]}"; done
    echo "haproxy    http://$RTD_HAPROXY_BIND  https://$RTD_HAPROXY_TLS_BIND  (stats http://$RTD_HAPROXY_STATS/)"
    ;;
stop)
    dir="${2:-/tmp/rtd-cluster}"
    [ -d "$dir" ] || { echo "no cluster in $dir" >&2; exit 1; }
    if [ -f "$dir/haproxy.pid" ]; then kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true; rm -f "$dir/haproxy.pid"; fi
    for f in "$dir"/instance-*.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f")"; kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$f"
    done
    if [ -f "$dir/own-db" ]; then bash scripts/lib/mariadb.sh stop "$(cat "$dir/own-db")" >/dev/null; fi
    rm -rf "$dir"
    log "stopped"
    ;;
*)
    sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
