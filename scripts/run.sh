#!/usr/bin/env bash
# The project's run command (README): installs the system libraries the server links against if
# they are missing, builds in release mode and starts the server on its defaults (memory store,
# port 4002). Extra arguments go to the server, e.g. `scripts/run.sh --tls-self-signed`.
# Without credentials (--auth-file, RTD_AUTH_FILE, RTD_INGEST_TOKEN, RTD_VIEW_TOKEN) it runs in
# development mode (--no-auth: no authentication, said loudly in the log); see Docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in libnghttp2-dev libmariadb-dev libjemalloc-dev zlib1g-dev openssl; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
swift build -c release --product dashboard-server
auth=(--no-auth)
if [ -n "${RTD_AUTH_FILE:-}${RTD_INGEST_TOKEN:-}${RTD_VIEW_TOKEN:-}${RTD_NO_AUTH:-}" ] || [[ " $* " == *" --auth-file"* || " $* " == *" --no-auth "* ]]; then
  auth=()
fi
exec .build/release/dashboard-server "${auth[@]}" "$@"
