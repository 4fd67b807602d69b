#!/usr/bin/env bash
# The project's test command (README): installs what the tests need on a fresh Debian machine,
# builds, runs the Swift unit tests, builds the embedding example, and runs the end-to-end suite
# against the real server over real sockets (curl, nghttp, h2load; HTTP/1.1, h2c and TLS h2), a
# throwaway MariaDB started here in a temporary directory (no system service, a free port), and the
# dashboard page in headless Chromium (screenshots in .build/test-artifacts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n==> %s\n' "$*"; }

# 1. System packages (idempotent; only installs what is missing).
need=()
for pkg in libnghttp2-dev libmariadb-dev libjemalloc-dev mariadb-server mariadb-client nghttp2-client nghttp2-server curl openssl zlib1g-dev \
           chromium chromium-driver haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c "import pytest, h2, hyperframe, selenium" 2>/dev/null || { log "installing pytest, h2, selenium"; python3 -m pip install -q pytest h2 selenium; }

# 2. A throwaway MariaDB for the MySQLStore tests (removed on exit, whatever happens).
source scripts/lib/mariadb.sh
log "starting a throwaway MariaDB"
rtd_mariadb_start
trap 'rtd_mariadb_stop' EXIT
export RTD_REQUIRE_MYSQL=1   # the MySQL suites fail instead of skipping if the database is missing

# 3. Build and unit tests.
log "swift build"
swift build
log "swift test (unit tests)"
swift test

# 4. The examples build and run against this checkout.
log "Examples/EmbeddedAggregator"
(cd Examples/EmbeddedAggregator && swift build && swift run -q EmbeddedAggregator)
log "Examples/CustomStore"
(cd Examples/CustomStore && swift build && swift run -q CustomStore)

# 5. The fuzz targets (libFuzzer + ASan) build, replay their seed corpus and run briefly; long
#    runs: scripts/fuzz/run.sh 600.
log "fuzz targets (seed corpus + 5 s each)"
bash scripts/fuzz/run.sh 5

# 6. End-to-end tests against the real server binary.
log "integration tests (pytest)"
export RTD_SERVER_BIN="$ROOT/.build/debug/dashboard-server"
export RTD_REQUIRE_BROWSER=1                    # the browser tests fail instead of skipping without Chromium
export RTD_ARTIFACTS="$ROOT/.build/test-artifacts"
python3 -m pytest -q Tests/Integration
