"""Fixtures: a shared server for the session, a factory for tests that need their own
(shutdown, small --max-line-length), and server stderr attached to every failing test's report.

Run:  python3 -m pytest -q Tests/Integration        (binary: $RTD_SERVER_BIN or .build/debug/dashboard-server)
"""

from __future__ import annotations

import shutil
from typing import Optional

import pytest

import os

import rtd_helpers as h
import rtd_mysql

REQUIRED_TOOLS = ("curl", "nghttp", "h2load")

# Servers started during the current test (and the session server), for failure reports.
_active_servers: list[h.ServerProcess] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "own_server: the test starts its own server process")


@pytest.fixture(scope="session", autouse=True)
def _tools():
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.exit(f"missing client tools: {missing}", returncode=4)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server (tick 200 ms). Tests isolate themselves with unique server ids/metrics."""
    srv = h.ServerProcess(tmp_path_factory.mktemp("shared-server"), name="shared")
    _active_servers.append(srv)
    yield srv
    srv.stop()
    if srv in _active_servers:
        _active_servers.remove(srv)


@pytest.fixture
def server_factory(tmp_path):
    """Starts dedicated servers: `server_factory("--max-line-length", "256")`. All are killed at teardown."""
    started: list[h.ServerProcess] = []

    def start(*extra_args: str, name: str = "own", tick_ms: int = h.TICK_MS, port: int = 0,
              nofile: Optional[tuple[int, int]] = None) -> h.ServerProcess:
        srv = h.ServerProcess(tmp_path / f"{name}-{len(started)}", name=f"{name}-{len(started)}", extra_args=extra_args,
                              tick_ms=tick_ms, port=port, nofile=nofile)
        started.append(srv)
        _active_servers.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(graceful=False)
        if srv in _active_servers:
            _active_servers.remove(srv)


@pytest.fixture(scope="session")
def mariadb():
    """The throwaway MariaDB (RTD_TEST_MYSQL). Missing: the MySQL tests skip, unless
    RTD_REQUIRE_MYSQL=1 (the README's test command), where they fail."""
    db = rtd_mysql.from_env()
    if db is None:
        if os.environ.get("RTD_REQUIRE_MYSQL") == "1":
            pytest.fail("RTD_REQUIRE_MYSQL=1 but RTD_TEST_MYSQL is not set (start scripts/lib/mariadb.sh)")
        pytest.skip("no MariaDB: set RTD_TEST_MYSQL (scripts/lib/mariadb.sh start DIR)")
    return db


@pytest.fixture
def mysql_db(mariadb):
    """A fresh, empty database for one test; dropped afterwards. Makes sure the server process is up
    again if a fault-injection test left it stopped."""
    if not mariadb.alive():
        mariadb.resume()
    name = mariadb.fresh_db()
    yield name
    if not mariadb.alive():
        mariadb.resume()
    mariadb.drop_db(name)


@pytest.fixture
def ids():
    """A unique prefix for server ids and metric names used by one test."""
    return h.uid()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for srv in list(_active_servers):
            text = srv.stderr_text(tail=80)
            state = "running" if srv.alive() else f"exited {srv.proc.returncode}"
            report.sections.append((f"server {srv.name} stderr ({state}; {srv.stderr_path})", text or "(empty)"))


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through chromedriver (selenium), viewport 1280×720. Missing: the browser
    tests skip, unless RTD_REQUIRE_BROWSER=1 (the README's test command), where they fail."""
    import rtd_browser
    try:
        b = rtd_browser.Browser()
    except rtd_browser.Unavailable as e:
        if os.environ.get("RTD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RTD_REQUIRE_BROWSER=1 but no browser: {e}")
        pytest.skip(f"no headless Chromium: {e}")
    yield b
    b.quit()
