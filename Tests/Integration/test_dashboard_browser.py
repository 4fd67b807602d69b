"""The dashboard page in a real headless Chromium against a real server fed over HTTP.

Screenshots land in $RTD_ARTIFACTS (default .build/test-artifacts)."""

from __future__ import annotations

import signal
import time

import pytest

import rtd_helpers as h
from rtd_feed import FleetFeeder

pytestmark = pytest.mark.own_server


def feeder_for(srv: h.ServerProcess, servers: int, prefix: str, interval: float = 0.5, **kw) -> FleetFeeder:
    return FleetFeeder(h.HOST, srv.port, servers, prefix=prefix, interval=interval, **kw).start()


def top_rows(browser) -> list:
    return browser.js("""return [...document.querySelectorAll('#toptable tbody tr')].map(tr =>
        ({server: tr.dataset.server, value: tr.cells[2].textContent}));""")


def test_values_appear_then_change_and_counts_follow(server_factory, browser):
    srv = server_factory(name="dash", tick_ms=250)
    prefix = h.uid("web") + "-"
    feed = feeder_for(srv, 30, prefix)
    try:
        feed.wait_rounds(2)
        hot = prefix + "00007"
        feed.set_value(hot, "cpu_usage", 99.5)
        browser.open(srv.url(f"/#metric=cpu_usage&warn=90&crit=99"))
        browser.wait("return document.getElementById('state').className === 'live'", what="live state")
        browser.wait(f"""const tr = document.querySelector('#toptable tbody tr');
                         return tr && tr.dataset.server === '{hot}' && tr.cells[2].textContent === '99.5 %'""",
                     what="the hot server on top with its value")
        browser.wait("return document.getElementById('c-servers').textContent === '30'", what="30 servers counted")
        assert browser.js("return document.getElementById('heatmap').dataset.cells") == "30"
        rows = top_rows(browser)
        assert rows[0] == {"server": hot, "value": "99.5 %"}, rows[:3]
        assert browser.text("#c-crit") == "1"
        browser.screenshot("dashboard-fleet")

        # New samples change what the page shows: the hot server cools down and leaves the top.
        feed.set_value(hot, "cpu_usage", 1.25)
        browser.wait(f"""const tr = document.querySelector('#toptable tbody tr[data-server="{hot}"]');
                         return !tr || tr.cells[2].textContent === '1.25 %';""", what="hot server value to change")
        browser.wait("return document.getElementById('c-crit').textContent === '0'", what="critical count to drop")
        first = top_rows(browser)[0]
        assert first["server"] != hot

        # A filter in the URL narrows the subscription: one server by prefix.
        browser.open(srv.url(f"/#metric=cpu_usage&q={prefix}00012"))
        browser.wait("return document.getElementById('c-servers').textContent === '1'", what="filtered count")
        assert [r["server"] for r in top_rows(browser)] == [prefix + "00012"]
        assert browser.js("return location.hash").find("q=") > 0
        assert not [m for m in browser.console() if "SEVERE" in m or "Uncaught" in m], browser.console()
    finally:
        feed.stop()


def test_clicking_a_server_opens_live_charts_and_history(server_factory, browser):
    srv = server_factory(name="drill", tick_ms=250)
    prefix = h.uid("db") + "-"
    feed = feeder_for(srv, 12, prefix)
    try:
        feed.wait_rounds(3)
        feed.wait_acked()
        target = prefix + "00003"
        feed.set_value(target, "cpu_usage", 97.0)
        browser.open(srv.url("/#metric=cpu_usage"))
        browser.wait(f"return document.querySelector('#toptable tbody tr[data-server=\"{target}\"]')", what="target row")
        browser.click(f"#toptable tbody tr[data-server='{target}']")
        browser.wait(f"const d = document.getElementById('drill'); return !d.hidden && d.dataset.server === '{target}'",
                     what="drill-down open")
        assert f"server={target}" in browser.js("return location.hash")
        # One card per metric the server reports, each with a live chart that grows.
        browser.wait("return document.querySelectorAll('#d-metrics .mcard').length === 5", what="5 metric cards")
        first = int(browser.wait("""const c = document.querySelector('#d-metrics .mcard[data-metric="cpu_usage"] canvas');
                                    return c && +c.dataset.points >= 1 && c.dataset.points""", what="live points"))
        browser.wait(f"""const c = document.querySelector('#d-metrics .mcard[data-metric="cpu_usage"] canvas');
                        return +c.dataset.points > {first}""", what="live chart to gain points")
        # History from /api/history (the memory store's minute rollups).
        browser.wait("return +document.getElementById('d-history').dataset.points > 0", what="history points")
        assert "resolution" in browser.text("#d-hnote")
        browser.click(".ranges button[data-range='6h']")
        browser.wait("return location.hash.includes('range=6h')", what="range in the URL")
        browser.wait("return +document.getElementById('d-history').dataset.points > 0", what="history points (6h)")
        card = browser.text('#d-metrics .mcard[data-metric="cpu_usage"] .last')
        assert card == "97 %", card
        browser.screenshot("dashboard-drilldown")

        # The view is shareable: a fresh page from the URL opens the same drill-down.
        url = browser.js("return location.href")
        browser.open(url)
        browser.wait(f"const d = document.getElementById('drill'); return !d.hidden && d.dataset.server === '{target}'",
                     what="drill-down from URL")
        browser.wait("return document.querySelectorAll('#d-metrics .mcard').length === 5", what="cards from URL")
        # Escape closes it and the subscription drops the focus server.
        browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
        browser.wait("return document.getElementById('drill').hidden", what="drill-down closed")
        assert "server=" not in browser.js("return location.hash")
    finally:
        feed.stop()


def test_idle_series_and_servers_leave_the_page(server_factory, browser):
    """--series-idle-timeout: a metric a server stopped reporting leaves its drill-down, and a
    server that stopped reporting leaves the fleet count and heatmap, while the rest stays live."""
    srv = server_factory("--series-idle-timeout", "3", name="dash-idle", tick_ms=250)
    prefix = h.uid("idle") + "-"
    feed = feeder_for(srv, 6, prefix)
    try:
        feed.wait_rounds(2)
        target, ghost = prefix + "00002", prefix + "ghost"
        # One extra metric for the target and one extra server, each sent once.
        once = h.ingest(srv, h.ndjson([{"server_id": target, "metric_name": "gpu_temp", "value": 61},
                                       {"server_id": ghost, "metric_name": "cpu_usage", "value": 50}]), "curl-h2c")
        assert h.split_ingest_reply(once.ndjson())[2]["acked_samples"] == 2
        browser.open(srv.url(f"/#metric=cpu_usage&server={target}"))
        browser.wait("return document.querySelectorAll('#d-metrics .mcard').length === 6", what="6 metric cards")
        browser.wait("return document.getElementById('c-servers').textContent === '7'", what="7 servers")
        # After the timeout both leave; the live ones stay.
        browser.wait("return document.querySelectorAll('#d-metrics .mcard').length === 5", timeout=20, what="gpu_temp card gone")
        assert not browser.js("return document.querySelector('#d-metrics .mcard[data-metric=\"gpu_temp\"]')")
        browser.wait("return document.getElementById('c-servers').textContent === '6'", timeout=20, what="ghost server gone")
        assert browser.js("return document.getElementById('heatmap').dataset.cells") == "6"
        assert browser.js("return document.getElementById('state').className") == "live"
        assert not [m for m in browser.console() if "SEVERE" in m or "Uncaught" in m], browser.console()
    finally:
        feed.stop()


def test_server_restart_shows_reconnecting_then_recovers(server_factory, browser):
    first = server_factory(name="restart-a", tick_ms=250)
    port = first.port
    prefix = h.uid("app") + "-"
    feed = feeder_for(first, 8, prefix)
    try:
        feed.wait_rounds(2)
        browser.open(first.url("/#metric=cpu_usage"))
        browser.wait("return document.getElementById('state').className === 'live'", what="live")
        browser.wait("return document.querySelectorAll('#toptable tbody tr').length === 8", what="8 rows")
        epoch_before = browser.js("return rtd.live.eventId").split("-")[0]

        # A server that stops talking (but keeps the connection) makes the page say "stale".
        first.signal(signal.SIGSTOP)
        try:
            browser.wait("return document.getElementById('state').className === 'stale'", timeout=15, what="stale")
            assert "old" in browser.text("#age")
        finally:
            first.signal(signal.SIGCONT)
        browser.wait("return document.getElementById('state').className === 'live'", timeout=15, what="live after SIGCONT")

        first.kill()
        browser.wait("return document.getElementById('state').className === 'reconnecting'", timeout=15, what="reconnecting")
        assert "reconnecting" in browser.text("#state")
        # The page keeps what it had while reconnecting (no blanking).
        assert len(top_rows(browser)) == 8
        assert browser.text("#c-servers") == "8"
        browser.screenshot("dashboard-reconnecting")

        second = server_factory(name="restart-b", tick_ms=250, port=port)
        assert second.port == port
        # The feeder reconnects by itself; the page resubscribes and gets a fresh snapshot (new epoch).
        browser.wait("return document.getElementById('state').className === 'live'", timeout=30, what="live again")
        browser.wait("return document.querySelectorAll('#toptable tbody tr').length === 8", timeout=20, what="rows again")
        # Ids now carry the new process's epoch (the resume id of the old one could not apply).
        assert browser.js("return rtd.live.eventId").split("-")[0] != epoch_before
        browser.wait("return rtd.stats.events > 0 && rtd.live.lastEventAt > Date.now() - 3000", what="fresh events")
        browser.screenshot("dashboard-recovered")
    finally:
        feed.stop()


def test_bytes_per_tick_stay_bounded_with_10000_servers(server_factory, browser):
    """10,000 servers × 5 metrics, every value changing every second: the default view's updates
    stay under 48 KiB per tick (a heatmap byte per server, 20 top rows, counts) while an unfiltered
    subscription to the same fleet would carry ~17 MB."""
    srv = server_factory(name="fleet10k", tick_ms=1000)
    feed = FleetFeeder(h.HOST, srv.port, 10_000, prefix="n", interval=1.0, labels=False).start()
    try:
        feed.wait_rounds(2, timeout=60)
        browser.open(srv.url("/#metric=cpu_usage&warn=80&crit=95"))
        browser.wait("return document.getElementById('c-servers').textContent === '10000'", timeout=60, what="10,000 servers")
        assert browser.js("return document.getElementById('heatmap').dataset.cells") == "10000"
        browser.js("rtd.stats.recent = []; rtd.stats.maxUpdateBytes = 0; rtd.stats.updates = 0; rtd.stats.updateBytes = 0;")
        before = browser.text("#c-p50")
        frames = browser.frame_stats(8)
        browser.wait("return rtd.stats.updates >= 6", timeout=30, what="6 updates")
        s = browser.js("return rtd.stats")
        avg = s["updateBytes"] / s["updates"]
        browser.wait(f"return document.getElementById('c-p50').textContent !== {before!r} || rtd.stats.updates > 12",
                     timeout=30, what="fleet numbers to move")
        metrics = browser.performance_metrics()
        report = {"servers": 10_000, "metrics": 5, "updates": s["updates"], "avg_update_bytes": avg,
                  "max_update_bytes": s["maxUpdateBytes"], **frames,
                  "cdp_js_heap_used": metrics.get("JSHeapUsedSize"), "cdp_nodes": metrics.get("Nodes")}
        browser.save_json("dashboard-10k", report)
        browser.screenshot("dashboard-10k")
        print("dashboard 10k:", report)
        assert s["maxUpdateBytes"] < 48 * 1024, report
        assert avg > 10_000, report   # the heatmap really is in there (one byte per server, base64)
    finally:
        feed.stop()


def test_themes_and_laptop_screen(server_factory, browser):
    """Dark and light themes, kept in the URL; a 1366×768 laptop screen shows every panel without
    horizontal scrolling."""
    srv = server_factory(name="theme", tick_ms=250)
    feed = feeder_for(srv, 300, h.uid("t") + "-")
    try:
        feed.wait_rounds(2)
        browser.open(srv.url("/#metric=memory_usage&theme=light&warn=60&crit=80"))
        browser.wait("return document.getElementById('c-servers').textContent === '300'", what="300 servers")
        assert browser.js("return document.documentElement.dataset.theme") == "light"
        light_bg = browser.js("return getComputedStyle(document.body).backgroundColor")
        browser.click("#theme")
        browser.wait("return document.documentElement.dataset.theme === 'dark'", what="dark theme")
        assert "theme=dark" in browser.js("return location.hash")
        assert browser.js("return getComputedStyle(document.body).backgroundColor") != light_bg
        browser.screenshot("dashboard-dark")
        browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False})
        try:
            browser.open(srv.url("/#metric=memory_usage&theme=dark&warn=60&crit=80"))
            browser.wait("return document.getElementById('c-servers').textContent === '300'", what="300 servers (1366)")
            assert browser.js("return document.documentElement.scrollWidth <= innerWidth")
            for sel in ("#heatmap", "#distchart", "#toptable"):
                box = browser.js(f"const r = document.querySelector('{sel}').getBoundingClientRect(); return [r.width, r.height, r.right]")
                assert box[0] > 200 and box[1] > 80 and box[2] <= 1366, (sel, box)
            browser.screenshot("dashboard-dark-1366x768")
        finally:
            browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                           {"width": 1280, "height": 720, "deviceScaleFactor": 1, "mobile": False})
    finally:
        feed.stop()


def test_the_page_works_behind_http_basic_credentials(server_factory, browser, tmp_path):
    """With credentials on, the browser's Basic credentials cover the page, its fetches and its EventSource."""
    creds = tmp_path / "credentials"
    creds.write_text("ingest feeder feeder-secret-0123456789\nview alice alice-secret-0123456789\n")
    srv = server_factory("--auth-file", str(creds), name="dash-auth", tick_ms=250)
    prefix = h.uid("auth") + "-"
    body = h.ndjson({"server_id": f"{prefix}{i:02d}", "metric_name": "cpu_usage", "value": 10 + i} for i in range(5))
    assert h.ingest(srv, body, "curl-h2c", headers={"authorization": "Bearer feeder-secret-0123456789"}).status == 200
    # Without credentials: the server's 401 challenge, no page.
    status, headers, _ = h.http_get(srv.url("/"))
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    browser.open(srv.url("/#metric=cpu_usage").replace("http://", "http://alice:alice-secret-0123456789@"))
    browser.wait("return document.getElementById('state').className === 'live'", what="live state behind Basic auth")
    browser.wait("return document.getElementById('c-servers').textContent === '5'", what="5 servers from the SSE stream")
    stats = h.http_get(srv.url("/api/stats"), headers={"authorization": "Bearer alice-secret-0123456789"})
    assert stats[0] == 200
    browser.screenshot("dashboard-basic-auth")


def test_filter_url_and_drill_down_state_survive_as_shared(server_factory, browser):
    """A shared link with a filter, a drill-down server the filter excludes and a chart metric:
    the excluded server does not rank in "worst servers" (its rows still come, for the drill-down),
    and the chart metric and label set of the link are kept (both were replaced before)."""
    srv = server_factory(name="dash-share", tick_ms=250)
    prefix = h.uid("sh") + "-"
    feed = feeder_for(srv, 12, prefix, labels=True)
    try:
        feed.wait_rounds(2)
        outside = prefix + "00005"
        feed.set_value(outside, "cpu_usage", 99.9)  # would top the table if it ranked
        browser.open(srv.url(f"/#metric=cpu_usage&q={prefix}0001&server={outside}&dmetric=memory_usage&dlabels=dc%3Deu"))
        matching = [i for i in feed.ids if i.startswith(prefix + "0001")]
        assert len(matching) >= 2 and outside not in matching
        browser.wait(f"return document.getElementById('c-servers').textContent === '{len(matching)}'", what="the servers the filter matches")
        browser.wait("return document.querySelectorAll('#d-metrics .mcard').length === 5", what="drill-down cards")
        servers = [r["server"] for r in top_rows(browser)]
        assert servers and all(s.startswith(prefix + "0001") for s in servers), servers
        assert "dmetric=memory_usage" in browser.js("return location.hash")
        assert "dlabels=dc%3Deu" in browser.js("return location.hash")
        browser.wait("return document.getElementById('d-hmetric').textContent === 'memory_usage {dc=eu}'", what="chart metric kept")
        assert not [m for m in browser.console() if "SEVERE" in m or "Uncaught" in m], browser.console()
    finally:
        feed.stop()


def test_a_refused_subscription_is_shown_not_retried_forever(server_factory, browser):
    """A filter the server rejects (400) used to leave the page 'reconnecting…' every 15 s over
    the old numbers; the page now shows the server's reason."""
    srv = server_factory(name="dash-bad", tick_ms=250)
    prefix = h.uid("bad") + "-"
    feed = feeder_for(srv, 3, prefix)
    try:
        feed.wait_rounds(1)
        browser.open(srv.url("/#metric=cpu_usage&q=%3Dx"))
        browser.wait("return document.getElementById('state').className === 'error'", timeout=20, what="error state")
        assert "refused" in browser.text("#state")
        # Fixing the filter connects again.
        browser.js("location.hash = '#metric=cpu_usage'; return 1")
        browser.wait("return document.getElementById('state').className === 'live'", what="live after the fix")
    finally:
        feed.stop()


def test_a_metric_whose_last_series_expires_shows_no_servers(server_factory, browser):
    """The selected metric's last series leaves (idle timeout): the counts and heatmap empty
    instead of showing the last servers 'live' forever."""
    srv = server_factory("--series-idle-timeout", "3", name="dash-gone", tick_ms=250)
    prefix = h.uid("gone") + "-"
    feed = feeder_for(srv, 3, prefix)
    gpu = FleetFeeder(h.HOST, srv.port, 2, metrics=("gpu_temp",), prefix=prefix + "gpu-", interval=0.5, labels=False).start()
    try:
        feed.wait_rounds(1)
        gpu.wait_rounds(1)
        browser.open(srv.url("/#metric=gpu_temp"))
        # Fed until the page shows them (a loaded machine may take a while to open the page).
        browser.wait("return document.getElementById('c-servers').textContent === '2'", what="2 servers")
        gpu.stop()
        browser.wait("return document.getElementById('c-servers').textContent === '–'", timeout=20, what="counts emptied")
        assert browser.text("#heat-note") == "no servers report this metric"
        assert browser.js("return document.getElementById('state').className") == "live"
    finally:
        gpu.stop()
        feed.stop()
