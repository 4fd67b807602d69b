"""Limits against the real server: connections per client address, dashboard subscribers, HTTP/2
streams per connection. Each is configurable, answers clearly when hit, is counted in
/api/stats, and leaves the clients within the limit unaffected."""
import json
import re
import resource
import shutil
import socket
import time

import pytest

import h2.connection
import h2.config
import h2.events
import h2.settings

import rtd_helpers as h


def open_socket(srv) -> socket.socket:
    s = socket.create_connection((h.HOST, srv.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_peer(s: socket.socket, timeout: float = 3) -> bool:
    s.settimeout(timeout)
    try:
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def answers_ready(s: socket.socket, timeout: float = 5) -> bool:
    s.settimeout(timeout)
    try:
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        return b"200" in s.recv(4096).split(b"\r\n")[0]
    except OSError:
        return False


def fill_to_the_limit(srv, limit: int) -> list[socket.socket]:
    """Opens `limit` connections (each answered) and checks that one more is closed before
    anything is read; returns the held ones."""
    held = [open_socket(srv) for _ in range(limit)]
    assert all(answers_ready(s) for s in held)
    extra = open_socket(srv)
    assert closed_by_peer(extra)
    extra.close()
    return held


def wait_for_a_freed_slot(srv, held: list[socket.socket]) -> None:
    """Closes one held connection; a new one is then answered (kept in `held`)."""
    held.pop().close()

    def answered() -> bool:
        s = open_socket(srv)
        held.append(s)
        return answers_ready(s, timeout=2)

    h.wait_until(answered, timeout=10, what="a slot freed by a closed connection")


def test_connections_per_address_are_limited_and_counted(server_factory):
    srv = server_factory("--max-connections-per-address", "3", name="conn-limit")
    held = fill_to_the_limit(srv, 3)
    try:
        wait_for_a_freed_slot(srv, held)
        # Stats over a fourth connection would be refused now: read them after closing the held ones.
    finally:
        for s in held:
            s.close()

    def refusals() -> int:
        # The server may not have seen the held sockets close yet; then this connection is
        # itself over the limit and reset: try again.
        try:
            return srv.stats()["connections"]["refused_per_address_total"]
        except (ConnectionError, OSError):
            return 0

    h.wait_until(lambda: refusals() >= 1, timeout=10, what="refusal counted")


def test_connections_in_all_are_limited_and_counted(server_factory):
    # No per-address limit: the total alone refuses the fourth connection.
    srv = server_factory("--max-connections", "3", "--max-connections-per-address", "0", name="total-limit")
    held = fill_to_the_limit(srv, 3)
    try:
        # The held connections are unaffected, and one of them reads the counters.
        conn = held[0]
        conn.sendall(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", reply.split(b"\r\n\r\n", 1)[0], re.I).group(1)):
            chunk = conn.recv(65536)
            assert chunk, "stats connection closed"
            reply += chunk
        stats = json.loads(reply.split(b"\r\n\r\n", 1)[1])["connections"]
        assert stats["limit"] == 3 and stats["open"] == 3 and stats["refused_at_limit_total"] >= 1
        assert stats["refused_per_address_total"] == 0
        wait_for_a_freed_slot(srv, held)
    finally:
        for s in held:
            s.close()
    h.wait_until(lambda: _stats_or_none(srv) is not None, timeout=10, what="stats once the held connections closed")
    metrics = h.http_get(srv.url("/metrics"))[2].decode()
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("rtd_connections_"))
    assert float(values["rtd_connections_refused_at_limit_total"]) >= 1, values
    assert float(values["rtd_connections_limit"]) == 3 and float(values["rtd_connections_open"]) >= 1, values


def _stats_or_none(srv):
    try:
        return srv.stats()
    except (ConnectionError, OSError):
        return None


def test_connection_limit_fits_the_open_file_limit(server_factory):
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is missing")
    # Soft 300 of hard 1,200 (or the runner's own hard limit, if lower): the server raises its
    # soft limit to the hard one and keeps 256 descriptors (a quarter of a limit below 1,024)
    # for the store and the rest, whatever was asked for.
    hard = min(1200, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    fits = hard - min(256, hard // 4)
    srv = server_factory("--max-connections", "20000", name="nofile", nofile=(min(300, hard), hard))
    assert srv.stats()["connections"]["limit"] == fits
    assert f"connections limited to {fits}" in srv.stderr_text()
    # Asked for fewer than fit: kept.
    srv2 = server_factory("--max-connections", "100", name="nofile-small", nofile=(min(300, hard), hard))
    assert srv2.stats()["connections"]["limit"] == 100
    assert "connections limited" not in srv2.stderr_text()
    # A small limit keeps a quarter, not 256 (which would leave no connection at all).
    srv3 = server_factory(name="nofile-tiny", nofile=(256, 256))
    assert srv3.stats()["connections"]["limit"] == 256 - 64


def test_dashboard_subscribers_are_capped_with_503_and_retry_after(server_factory):
    srv = server_factory("--max-sse-clients", "2", name="sse-limit")
    first, second = h.SSEClient(srv, query="metrics=cpu"), h.SSEClient(srv, query="metrics=cpu")
    try:
        assert first.status == 200 and second.status == 200
        status, headers, body = h.http_get(srv.url("/api/dashboard/stream?metrics=cpu"), timeout=5)
        assert status == 503 and headers["retry-after"] == "5" and b"--max-sse-clients" in body
        assert srv.stats()["sse"]["refused_total"] == 1
        assert "rtd_sse_refused_total 1" in h.http_get(srv.url("/metrics"))[2].decode()
        # The two admitted streams keep getting events.
        assert first.next_event(timeout=10) and second.next_event(timeout=10)
    finally:
        first.close()
        second.close()
    h.wait_until(lambda: srv.stats()["sse"]["clients"] == 0, timeout=10, what="subscribers gone")


def test_streams_per_connection_follow_the_setting(server_factory):
    srv = server_factory("--max-concurrent-streams", "4", name="streams-limit")
    s = open_socket(srv)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    s.settimeout(5)
    settings = None
    deadline = time.time() + 5
    while settings is None and time.time() < deadline:
        for ev in conn.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                settings = ev.changed_settings
        s.sendall(conn.data_to_send())
    s.close()
    assert settings is not None
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 4


def wait_closed(s: socket.socket, timeout: float) -> float:
    """Seconds until the peer closes `s` (reading only; nothing is sent)."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - t0


def test_idle_connections_are_closed_and_sse_streams_are_not(server_factory):
    srv = server_factory("--idle-timeout", "2", name="idle")
    # A connection that never sends a request: closed after min(10 s, idle timeout).
    silent = open_socket(srv)
    assert wait_closed(silent, timeout=15) < 6
    # A keep-alive connection after one request: closed once idle for 2 s.
    ka = open_socket(srv)
    ka.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    ka.settimeout(5)
    assert b" 200 " in ka.recv(4096)
    assert 1.5 < wait_closed(ka, timeout=15) < 8
    # A dashboard stream sends nothing either, but stays: it is being written to.
    sse = h.SSEClient(srv, query="metrics=cpu")
    try:
        assert sse.status == 200
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            sse.next_event(timeout=5)
        assert sse.proc.poll() is None
    finally:
        sse.close()
    closed = srv.stats()["connections"]["closed_idle"]
    assert closed["no_request"] >= 1 and closed["idle"] >= 1 and closed["stalled_reader"] == 0
    metrics = h.http_get(srv.url("/metrics"))[2].decode()
    assert 'rtd_connections_closed_idle_total{reason="no_request"}' in metrics


def test_a_dashboard_client_that_stops_reading_is_closed_and_others_are_unaffected(server_factory):
    """Fault injection: an SSE client that never reads. Its queue is bounded and coalesced; once its
    socket has not been writable for the idle timeout the connection is closed. A normal viewer
    keeps receiving events throughout, and memory stays bounded."""
    from rtd_feed import FleetFeeder
    srv = server_factory("--idle-timeout", "3", name="stalled", tick_ms=100)
    feed = FleetFeeder(h.HOST, srv.port, 2000, prefix=h.uid("st") + "-", interval=0.2, labels=False).start()
    try:
        feed.wait_rounds(2)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((h.HOST, srv.port))
        stalled.sendall(b"GET /api/dashboard/stream?fleet=0&limit=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        viewer = h.SSEClient(srv, query="metrics=cpu_usage&top=5")
        try:
            rss0 = srv.stats()["memory"]["rss_bytes"]
            closed = h.wait_until(lambda: srv.stats()["connections"]["closed_idle"]["stalled_reader"] >= 1 or None,
                                  timeout=30, what="the stalled reader closed")
            assert closed
            got = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5:
                viewer.next_event(timeout=5)
                got += 1
            assert got >= 5, "the normal viewer kept receiving updates"
            assert srv.stats()["memory"]["rss_bytes"] < rss0 + 300_000_000
        finally:
            viewer.close()
            stalled.close()
    finally:
        feed.stop()


def test_an_h2_dashboard_stream_whose_window_stays_shut_is_ended(server_factory):
    """Fault injection over HTTP/2: a client reads its socket (so it stays writable) but never
    opens the stream's flow-control window. The connection-level guard cannot see that; the SSE
    stream itself ends once its bytes went untaken for the idle timeout, and is counted."""
    from rtd_feed import FleetFeeder
    srv = server_factory("--idle-timeout", "3", name="h2-window-shut", tick_ms=100)
    feed = FleetFeeder(h.HOST, srv.port, 500, prefix=h.uid("ws") + "-", interval=0.2, labels=False).start()
    sock = socket.create_connection((h.HOST, srv.port))
    try:
        feed.wait_rounds(2)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/api/dashboard/stream?fleet=0"), (":scheme", "http"),
                                (":authority", "x")], end_stream=True)
        sock.sendall(conn.data_to_send())
        sock.settimeout(0.5)
        received, ended = 0, False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ended:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                ended = True
                break
            for ev in conn.receive_data(data):  # never acknowledge_received_data: the window stays shut
                if isinstance(ev, h2.events.DataReceived):
                    received += len(ev.data)
                if isinstance(ev, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    ended = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        assert ended, "the stalled stream was never ended"
        assert received <= 65_535, received  # nothing beyond the initial window
        assert srv.stats()["connections"]["closed_idle"]["stalled_reader"] >= 1
        assert h.wait_until(lambda: srv.stats()["sse"]["clients"] == 0 or None, timeout=10, what="the SSE slot freed")
    finally:
        sock.close()
        feed.stop()


def test_streams_opened_and_never_fed_are_closed_with_their_connection(server_factory, ids):
    """Fault injection: a client opens ingest streams and never sends a byte of body. The idle guard
    closes the connection after the idle timeout; an agent on another connection is unaffected."""
    srv = server_factory("--idle-timeout", "2", name="never-sends")
    s = open_socket(srv)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    for i in range(10):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/api/metrics/stream"), (":scheme", "http"),
                                (":authority", "x"), ("content-type", "application/x-ndjson")])
    s.sendall(conn.data_to_send())
    agent = h.StreamingIngest(srv, proto="h2c")
    try:
        t0 = time.monotonic()
        for i in range(8):  # a live agent: a line every half second keeps its own connection open
            agent.send(h.ndjson([{"server_id": f"{ids}-live", "metric_name": "m", "value": i}]))
            agent.read_until(lambda o: o.get("ack", 0) >= i + 1, timeout=5)
            time.sleep(0.5)
        assert wait_closed(s, timeout=10) < 10 and time.monotonic() - t0 < 20
        agent.finish_request()
        summary = [o for o in agent.read_to_eof() if "summary" in o][0]["summary"]
        assert summary["acked_lines"] == 8 and summary["rejected"] == 0
    finally:
        agent.close()
        s.close()
    assert srv.stats()["connections"]["closed_idle"]["idle"] >= 1


def test_request_body_rate_per_connection_slows_the_client_and_keeps_everything(server_factory, ids):
    """--max-body-rate: flow-control credit is handed back at the configured rate, so a fast client
    is slowed down; nothing is refused or lost."""
    srv = server_factory("--max-body-rate", str(1 << 20), name="body-rate")
    lines = [{"server_id": f"{ids}-r", "metric_name": "m", "value": i, "ts": h.now_ms() - 100_000 + i // 10,
              "labels": {"pad": "x" * 40}} for i in range(60_000)]
    body = h.ndjson(lines)
    assert len(body) > 6_000_000
    t0 = time.monotonic()
    resp = h.ingest(srv, body, "curl-h2c")
    elapsed = time.monotonic() - t0
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert resp.status == 200 and not errors and summary["acked_lines"] == 60_000
    # 1 MiB/s with a 1 s burst and a 1 MiB stream window: the rest (≥ 4 MB) takes ≥ 4 s.
    assert elapsed >= 3.5, elapsed
    assert srv.stats()["ingest"]["body_rate_throttled_total"] > 0


def test_series_cap_refuses_new_series_per_line_and_keeps_existing_ones(server_factory, ids):
    """--max-series: once the cap is reached, a line that would start a new series is rejected
    with too_many_series and its line number, is not stored or aggregated, and is counted; lines
    of existing series beside it are acknowledged and aggregated as before."""
    srv = server_factory("--max-series", "3", name="series-cap")
    sid, ts = f"{ids}-cap", h.now_ms() - 5_000
    lines = [
        {"server_id": sid, "metric_name": "cpu", "value": 1, "ts": ts},         # 1: new series, fits
        {"server_id": sid, "metric_name": "mem_used", "value": 2, "ts": ts},    # 2: new series, fits
        {"server_id": f"{sid}-b", "metric_name": "cpu", "value": 3, "ts": ts},  # 3: new series, fits (cap 3)
        {"server_id": sid, "metric_name": "disk", "value": 4, "ts": ts},        # 4: refused
        {"server_id": sid, "metric_name": "cpu", "value": 5, "ts": ts + 1},     # 5: existing
        {"server_id": f"{sid}-c", "metric_name": "cpu", "value": 6, "ts": ts},  # 6: refused
        {"server_id": sid, "metric_name": "cpu", "value": 7, "ts": ts + 2, "labels": {"core": "0"}},  # 7: refused (labels make a series)
        {"server_id": f"{sid}-b", "metric_name": "cpu", "value": 8, "ts": ts + 1},  # 8: existing
    ]
    # The first three take the cap. (Which new series take the last places when several arrive in
    # one batch as the cap is reached is not defined: shards fold in parallel.)
    first = h.ingest(srv, h.ndjson(lines[:3]), "curl-h2c")
    assert h.split_ingest_reply(first.ndjson())[2]["acked_samples"] == 3
    resp = h.ingest(srv, h.ndjson(lines), "curl-h2c")
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert resp.status == 200
    assert [(e["line"], e["code"]) for e in errors] == [(4, "too_many_series"), (6, "too_many_series"), (7, "too_many_series")]
    assert "'disk'" in errors[0]["reason"] and "limit (3)" in errors[0]["reason"], errors[0]
    assert summary["acked_lines"] == 8 and summary["acked_samples"] == 5 and summary["rejected"] == 3, summary
    assert summary["samples"] == 5, summary  # refused samples are rejections, not samples
    # The existing series kept aggregating; the refused ones do not exist.
    snap = h.sse_rows(srv, [sid, f"{sid}-b", f"{sid}-c"], lambda s: s.get((sid, "cpu", ""), {}).get("count") == 3)
    assert snap[(sid, "cpu", "")]["last"] == 5 and snap[(f"{sid}-b", "cpu", "")]["count"] == 3
    assert set(snap) == {(sid, "cpu", ""), (sid, "mem_used", ""), (f"{sid}-b", "cpu", "")}
    st = srv.stats()
    assert st["series"]["count"] == 3 and st["series"]["max"] == 3
    assert st["ingest"]["rejections"]["too_many_series"] == 3
    assert st["writer"]["samples_refused_total"] == 3 and st["series"]["rejected_new_series_samples"] == 3
    assert 'rtd_ingest_rejected_lines_total{reason="too_many_series"} 3' in h.http_get(srv.url("/metrics"))[2].decode()

    # Influx /write: a line whose fields mix an existing and a new series is a partial write (400,
    # as InfluxDB answers max-series-per-database); the existing field is kept.
    lp = f"mem,host={sid} used=9,free=1 {ts + 5}\n".encode()
    r = h.curl(srv, "/write?precision=ms", data=lp)
    assert r.status == 400 and b"too_many_series" in r.body and b"line 1" in r.body and b"'mem_free'" in r.body, r.body
    snap = h.sse_rows(srv, [sid], lambda s: s.get((sid, "mem_used", ""), {}).get("count") == 3)
    assert snap[(sid, "mem_used", "")]["last"] == 9
    assert srv.stats()["ingest"]["rejections"]["too_many_series"] == 4


def test_idle_series_leave_the_dashboard_and_free_their_place_under_the_cap(server_factory, ids):
    """--series-idle-timeout: a series without samples for that long is removed from the live
    aggregates and the dashboard (SSE `removed`), its open minute still reaches the store, its place
    under --max-series is free again, and a series that keeps reporting is untouched."""
    srv = server_factory("--series-idle-timeout", "3", "--max-series", "2", name="series-idle")
    busy, idle, late = f"{ids}-busy", f"{ids}-idle", f"{ids}-late"
    ts = h.now_ms()
    first = h.ingest(srv, h.ndjson([{"server_id": busy, "metric_name": "cpu", "value": 1, "ts": ts},
                                    {"server_id": idle, "metric_name": "cpu", "value": 42, "ts": ts}]), "curl-h2c")
    assert h.split_ingest_reply(first.ndjson())[2]["acked_samples"] == 2
    # At the cap: a third series is refused for now.
    refused = h.ingest(srv, h.ndjson([{"server_id": late, "metric_name": "cpu", "value": 1}]), "curl-h2c")
    assert [e["code"] for e in h.split_ingest_reply(refused.ndjson())[1]] == ["too_many_series"]
    with h.SSEClient(srv, f"servers={busy},{idle},{late}") as sse:
        sse.wait_state(lambda s: (busy, "cpu", "") in s and (idle, "cpu", "") in s, what="both series")
        # Keep `busy` reporting while `idle` stays quiet; its removal arrives as an SSE `removed` entry.
        deadline = time.monotonic() + 15
        removed_event = None
        while removed_event is None:
            assert time.monotonic() < deadline, f"idle series not removed; stats {srv.stats()['series']}"
            h.ingest(srv, h.ndjson([{"server_id": busy, "metric_name": "cpu", "value": 2}]), "curl-h2c")
            ev = sse.next_event(timeout=5)
            if any(r["server_id"] == idle for r in (ev.data or {}).get("removed", [])):
                removed_event = ev
        assert (idle, "cpu", "") not in sse.state and (busy, "cpu", "") in sse.state
        assert removed_event.data["removed"] == [{"server_id": idle, "metric_name": "cpu"}]
    st = srv.stats()["series"]
    assert st["count"] == 1 and st["expired_total"] == 1 and st["idle_timeout_ms"] == 3000, st
    assert "rtd_series_removed_total 1" in h.http_get(srv.url("/metrics"))[2].decode()
    # Its minute was sealed into the store before it left.
    hist = srv.get_json(f"/api/history?server_id={idle}&metric_name=cpu&from=-15m&to=now")
    assert [(p["count"], p["max"]) for p in hist["points"]] == [(1, 42)], hist
    # Its place under the cap is free: the third series fits now; a fresh snapshot has no trace of `idle`.
    fits = h.ingest(srv, h.ndjson([{"server_id": late, "metric_name": "cpu", "value": 3}]), "curl-h2c")
    acks, errors, summary = h.split_ingest_reply(fits.ndjson())
    assert not errors and summary["acked_samples"] == 1
    snap = h.sse_rows(srv, [busy, idle, late], lambda s: (late, "cpu", "") in s)
    assert set(snap) == {(busy, "cpu", ""), (late, "cpu", "")}
