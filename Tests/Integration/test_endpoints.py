"""/health, /api/stats, /metrics, /, /api/history, and 404/405 handling."""

from __future__ import annotations

import re

import pytest

import rtd_helpers as h


@pytest.mark.parametrize("proto", ["h1", "h2c", "h2-tls", "h1-tls"])
def test_health(server, proto):
    resp = h.curl(server, "/health", proto=proto)
    assert resp.status == 200 and resp.http_version == h.EXPECTED_HTTP_VERSION[proto]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == "ok"
    assert body["store"]["backend"] == "memory" and body["store"]["healthy"] is True


def test_stats_shape_and_counters(server, ids):
    s = server.stats()
    assert isinstance(s["ingest"]["samples_total"], int)
    assert isinstance(s["ingest"]["rejections"], dict)
    assert isinstance(s["series"]["count"], int)
    assert isinstance(s["sse"]["clients"], int)
    assert 0 <= s["writer"]["buffer_fill"] <= 1
    assert s["store"]["backend"] == "memory"
    assert s["memory"]["rss_bytes"] > 1 << 20
    # The server runs on jemalloc (linked into the executable): its heap figures are reported,
    # which they would not be if glibc's malloc served the process.
    m = s["memory"]
    assert m["allocator"] == "jemalloc"
    assert 0 < m["heap_allocated_bytes"] <= m["heap_active_bytes"] <= m["heap_mapped_bytes"]
    assert m["heap_resident_bytes"] > 0  # jemalloc's figure is an upper bound: not compared with RSS

    before = s["ingest"]["samples_total"]
    h.ingest(server, h.ndjson({"server_id": f"{ids}-st", "metric_name": "m", "value": i} for i in range(7)), "curl-h2c")
    after = server.stats()["ingest"]["samples_total"]
    assert after - before == 7


def test_stats_counts_sse_clients(server, ids):
    # Clients of earlier tests have all disconnected.
    h.wait_until(lambda: server.stats()["sse"]["clients"] == 0, what="no SSE clients")
    a = h.SSEClient(server, f"servers={ids}-none", proto="h1")
    b = h.SSEClient(server, f"servers={ids}-none", proto="h2c")
    try:
        a.next_event()
        b.next_event()
        h.wait_until(lambda: server.stats()["sse"]["clients"] == 2, what="2 SSE clients")
        status, _, body = h.http_get(server.url("/metrics"))
        assert re.search(r"^rtd_sse_clients 2(\.0)?$", body.decode(), re.M)
    finally:
        a.close()
        b.close()
    h.wait_until(lambda: server.stats()["sse"]["clients"] == 0, what="SSE clients to go away")


def test_stats_counts_open_connections(server, ids):
    h.wait_until(lambda: server.stats()["connections"]["http2"] == 0, what="no HTTP/2 connections")
    sse = [h.SSEClient(server, f"servers={ids}-none", proto=p) for p in ("h2c", "h2-tls")]
    try:
        for s in sse:
            s.next_event()
        h.wait_until(lambda: server.stats()["connections"]["http2"] == 2, what="two open HTTP/2 connections")
    finally:
        for s in sse:
            s.close()
    h.wait_until(lambda: server.stats()["connections"]["http2"] == 0, what="the HTTP/2 connections to close")


def test_stats_counts_open_ingest_streams(server, ids):
    stream = h.StreamingIngest(server, proto="h2c")
    try:
        stream.send(h.ndjson([{"server_id": f"{ids}-open", "metric_name": "m", "value": 1}]))
        stream.read_until(lambda o: o.get("ack") == 1)
        assert server.stats()["ingest"]["open_streams"] >= 1
    finally:
        stream.close()


def _prom_value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}(?:\{{\}})? ([0-9.eE+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_prometheus_metrics(server, ids):
    status, headers, body = h.http_get(server.url("/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    before = _prom_value(text, "rtd_ingest_samples_total")
    h.ingest(server, h.ndjson({"server_id": f"{ids}-prom", "metric_name": "m", "value": i} for i in range(3)), "curl-h1")
    after = _prom_value(h.http_get(server.url("/metrics"))[2].decode(), "rtd_ingest_samples_total")
    assert after - before == 3


def test_prometheus_counters_exist_from_the_first_scrape(server_factory):
    """A fresh server exports every counter at 0 (an absent series breaks `increase()` and alert
    rules), including each rejection reason and the SSE coalescing counter."""
    srv = server_factory(name="prom-fresh")
    text = h.http_get(srv.url("/metrics"))[2].decode()
    for name in ('rtd_ingest_rejected_lines_total{reason="invalid_json"}', 'rtd_ingest_rejected_lines_total{reason="too_many_series"}',
                 "rtd_sse_coalesced_total", "rtd_sse_refused_total", 'rtd_connections_closed_idle_total{reason="stalled_reader"}',
                 "rtd_series_removed_total"):
        assert _prom_value(text, name) == 0, name


def test_dashboard_page(server):
    """The page and its module scripts and stylesheet are served with the right types (over h1 and TLS h2)."""
    status, headers, body = h.http_get(server.url("/"))
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/app.js"' in body and b'href="/style.css"' in body
    for path, ctype, marker in (("/app.js", "text/javascript", b"EventSource"), ("/charts.js", "text/javascript", b"class Heatmap"),
                                ("/style.css", "text/css", b"--heat-crit")):
        status, headers, body = h.http_get(server.url(path))
        assert status == 200 and headers["content-type"].startswith(ctype) and marker in body, path
    resp = h.curl(server, "/app.js", proto="h2-tls")
    assert resp.status == 200 and b"EventSource" in resp.body


@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_unknown_path_is_404_json(server, proto):
    resp = h.curl(server, "/no/such/path", proto=proto)
    assert resp.status == 404
    assert resp.headers["content-type"].startswith("application/json")
    assert "error" in resp.json()


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/api/metrics/stream", "POST"),
    ("PUT", "/write", "POST"),
    ("POST", "/api/dashboard/stream", "GET"),
    ("DELETE", "/api/stats", "GET"),
    ("POST", "/health", "GET"),
    ("POST", "/api/history", "GET"),
    ("POST", "/metrics", "GET"),
])
@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_wrong_method_is_405(server, method, path, allow, proto):
    resp = h.curl(server, path, proto=proto, method=method)
    assert resp.status == 405, resp.body
    assert resp.headers.get("allow") == allow
    assert "error" in resp.json()


def test_history_values_and_minutes(server, ids):
    sid = f"{ids}-hist"
    now = h.now_ms()
    minute = now - now % 60_000
    past = minute - 3 * 60_000 + 5_000  # three minutes before the current one
    body = h.ndjson([
        {"server_id": sid, "metric_name": "lat", "value": 100, "ts": past},
        {"server_id": sid, "metric_name": "lat", "value": 10, "ts": now},
        {"server_id": sid, "metric_name": "lat", "value": 20, "ts": now},
        {"server_id": sid, "metric_name": "lat", "value": 30, "ts": now},
    ])
    h.ingest(server, body, "curl-h1")

    def points():
        hist = server.get_json(f"/api/history?server_id={sid}&metric_name=lat&from=-15m&to=now")
        return hist if sum(p["count"] for p in hist["points"]) == 4 else None
    hist = h.wait_until(points, what="4 samples in history")
    by_ts = {p["ts"]: p for p in hist["points"]}
    assert set(by_ts) == {minute - 3 * 60_000, minute}, hist
    cur = by_ts[minute]
    assert (cur["count"], cur["avg"], cur["min"], cur["max"]) == (3, 20, 10, 30)
    assert cur["p50"] == pytest.approx(20, rel=0.02)
    assert by_ts[minute - 3 * 60_000]["count"] == 1 and by_ts[minute - 3 * 60_000]["max"] == 100
    assert hist["to"] - hist["from"] == 15 * 60_000

    # Absolute bounds and a coarser resolution.
    hist = server.get_json(f"/api/history?server_id={sid}&metric_name=lat&from={minute - 10 * 60_000}&to={now + 1}&max_points=1")
    assert len(hist["points"]) == 1 and hist["points"][0]["count"] == 4
    assert hist["resolution_ms"] >= 11 * 60_000
    # A window that ends before the current minute only has the old sample.
    hist = server.get_json(f"/api/history?server_id={sid}&metric_name=lat&from={minute - 10 * 60_000}&to={minute - 60_000}")
    assert [(p["ts"], p["count"]) for p in hist["points"]] == [(minute - 3 * 60_000, 1)]


@pytest.mark.parametrize("query", [
    "metric_name=m",                                  # no server_id
    "server_id=a",                                    # no metric_name
    "server_id=bad%20id&metric_name=m",
    "server_id=a&metric_name=m&from=yesterday",
    "server_id=a&metric_name=m&from=-5x",
    "server_id=a&metric_name=m&from=now&to=-1h",      # from >= to
    "server_id=a&metric_name=m&max_points=0",
    "server_id=a&metric_name=m&max_points=100001",
    # Times whose arithmetic would overflow (each once crashed the server).
    "server_id=a&metric_name=m&from=-9999999999999h",
    "server_id=a&metric_name=m&from=-999999999999d",
    "server_id=a&metric_name=m&from=-9999999999999999m",
    "server_id=a&metric_name=m&from=now&to=-9223372036854775807s",
    "server_id=a&metric_name=m&from=-9223372036854775807",
    "server_id=a&metric_name=m&from=-1000000000000000&to=now",
    "server_id=a&metric_name=m&from=0&to=9223372036854775807",
])
def test_history_invalid_params_are_400(server, query):
    status, headers, body = h.http_get(server.url("/api/history?" + query))
    assert status == 400, (query, body)
    assert headers["content-type"].startswith("application/json")
    assert b'"error"' in body
    assert h.http_get(server.url("/health"))[0] == 200  # still up


def test_history_unknown_series_is_empty(server, ids):
    hist = server.get_json(f"/api/history?server_id={ids}-nobody&metric_name=m&from=-1h&to=now")
    assert hist["points"] == []
