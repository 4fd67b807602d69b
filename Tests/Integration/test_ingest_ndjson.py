"""POST /api/metrics/stream: NDJSON over HTTP/1.1, h2c and TLS h2; streaming acks; per-line rejections."""

from __future__ import annotations

import json

import pytest

import rtd_helpers as h

CLIENTS = ["curl-h1", "curl-h2c", "nghttp-h2c", "curl-h2-tls", "nghttp-h2-tls", "curl-h1-tls"]


def _check_version(resp: h.Response, client: str) -> None:
    tool, proto = client.split("-", 1)
    if tool == "curl":
        # %{http_version}: what was really spoken (ALPN on TLS), not what was asked for.
        assert resp.http_version == h.EXPECTED_HTTP_VERSION[proto], f"{client} spoke HTTP/{resp.http_version}"
    else:
        assert resp.http_version == "HTTP/2.0"


@pytest.mark.parametrize("client", CLIENTS)
def test_ndjson_roundtrip(server, ids, client):
    """Acks/summary, then the series show up in /api/stats, an SSE init and /api/history."""
    web, db = f"{ids}-web-01", f"{ids}-db-01"
    ts = h.now_ms()
    body = h.ndjson([
        {"server_id": web, "metric_name": "cpu_usage", "value": 42.5, "ts": ts, "labels": {"dc": "eu", "rack": "r1"}},
        # Same series: labels are canonicalised (sorted), so key order does not matter.
        {"server_id": web, "metric_name": "cpu_usage", "value": 40.5, "ts": ts + 1, "labels": {"rack": "r1", "dc": "eu"}},
        ":heartbeat",
        "",
        {"server_id": web, "metric_name": "mem_used", "value": 1024, "ts": ts},
        {"server_id": db, "metric_name": "cpu_usage", "value": 7, "ts": ts},
    ])
    series_before = server.stats()["series"]["count"]

    resp = h.ingest(server, body, client)
    assert resp.status == 200, resp.body
    _check_version(resp, client)
    assert resp.headers.get("content-type", "").startswith("application/x-ndjson")
    if client in ("curl-h1", "curl-h1-tls"):
        assert resp.headers.get("transfer-encoding") == "chunked"  # streamed, length unknown up front
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert errors == []
    assert summary == {"lines": 6, "samples": 4, "acked_lines": 6, "acked_samples": 4, "rejected": 0, "heartbeats": 1}
    for a in acks:
        assert a["ack"] <= 6 and a["samples"] <= 4

    # /api/stats: exactly three new series (the two cpu_usage lines of web are one series).
    count = h.wait_until(lambda: (c := server.stats()["series"]["count"]) >= series_before + 3 and c,
                         what="series count to grow by 3")
    assert count == series_before + 3

    # SSE init (filtered to this test's servers): the rows and their values.
    def complete(state):
        return len(state) == 3 and all(r["count"] >= 1 for r in state.values()) and \
            state.get((web, "cpu_usage", "dc=eu,rack=r1"), {}).get("count") == 2
    state = h.sse_rows(server, [web, db], complete)
    assert set(state) == {(web, "cpu_usage", "dc=eu,rack=r1"), (web, "mem_used", ""), (db, "cpu_usage", "")}
    cpu = state[(web, "cpu_usage", "dc=eu,rack=r1")]
    assert cpu["labels"] == "dc=eu,rack=r1"
    assert (cpu["last"], cpu["lastUpdate"], cpu["count"]) == (40.5, ts + 1, 2)
    assert (cpu["min"], cpu["max"], cpu["avg"], cpu["count1m"]) == (40.5, 42.5, 41.5, 2)
    assert "labels" not in state[(web, "mem_used", "")]
    assert state[(web, "mem_used", "")]["last"] == 1024
    assert (state[(db, "cpu_usage", "")]["last"], state[(db, "cpu_usage", "")]["count"]) == (7, 1)

    # /api/history includes the current (open) minute.
    hist = server.get_json(f"/api/history?server_id={web}&metric_name=cpu_usage&from=-15m&to=now")
    assert set(hist) == {"server_id", "metric_name", "from", "to", "resolution_ms", "kind", "points"}
    assert hist["kind"] == "rollup"  # the memory store keeps rollups for history
    assert all(set(p) == {"ts", "count", "avg", "min", "max", "p50", "p95", "p99"} for p in hist["points"])
    assert hist["server_id"] == web and hist["metric_name"] == "cpu_usage"
    assert hist["resolution_ms"] == 60_000
    pts = hist["points"]
    assert sum(p["count"] for p in pts) == 2, pts
    assert min(p["min"] for p in pts) == 40.5 and max(p["max"] for p in pts) == 42.5
    assert {p["ts"] for p in pts} <= {ts - ts % 60_000, (ts + 1) - (ts + 1) % 60_000}, pts


@pytest.mark.parametrize("proto", ["h2c", "h1", "h2-tls"])
def test_acks_stream_while_request_is_open(server, ids, proto):
    """A long-lived request: acks arrive before the request body ends; then the summary."""
    srv_id = f"{ids}-agent"
    line = lambda v: h.ndjson([{"server_id": srv_id, "metric_name": "load", "value": v}])
    stream = h.StreamingIngest(server, proto=proto)
    try:
        for v in range(5):
            stream.send(line(v))
        # The ack for all 5 lines comes back while curl's stdin (the request body) is still open.
        ack = stream.read_until(lambda o: o.get("ack") == 5, timeout=10)
        assert ack == {"ack": 5, "samples": 5}
        assert stream.running(), "the request must still be open"

        stream.send(line(5) + b'{"server_id":"' + srv_id.encode() + b'","metric_name":"load","value":"x"}\n' + line(6))
        err = stream.read_until(lambda o: "error" in o, timeout=10)
        assert err["error"]["line"] == 7 and err["error"]["code"] == "invalid_value"
        ack = stream.read_until(lambda o: o.get("ack") == 8, timeout=10)
        assert ack == {"ack": 8, "samples": 7}
        assert stream.running()

        stream.send(b":still here\n" + line(7))
        stream.finish_request()
        rest = stream.read_to_eof(timeout=15)
        _, errors, summary = h.split_ingest_reply(stream.received)
        assert [e["line"] for e in errors] == [7]
        assert summary == {"lines": 10, "samples": 8, "acked_lines": 10, "acked_samples": 8, "rejected": 1, "heartbeats": 1}
        assert rest and "summary" in rest[-1]
    finally:
        stream.close()
    state = h.sse_rows(server, [srv_id], lambda s: s.get((srv_id, "load", ""), {}).get("count") == 8)
    assert state[(srv_id, "load", "")]["last"] == 7


def test_a_chunk_without_a_complete_line_gets_no_ack_line(server, ids):
    """A request-body chunk cut mid-line acknowledges nothing new, so no ack line is written for
    it (it used to produce `{"ack":0,"samples":0}`); the acks that follow stay cumulative."""
    srv_id = f"{ids}-cut"
    line = h.ndjson([{"server_id": srv_id, "metric_name": "load", "value": 1}])
    stream = h.StreamingIngest(server, proto="h2c")
    try:
        bytes_before = server.stats()["ingest"]["bytes_total"]
        stream.send(line[:20])
        # Received (and its flow-control credit handed back through the writer) on its own.
        h.wait_until(lambda: server.stats()["ingest"]["bytes_total"] >= bytes_before + 20, what="partial chunk received")
        stream.send(line[20:] + line)
        assert stream.read_until(lambda o: o.get("ack") == 2, timeout=10) == {"ack": 2, "samples": 2}
        stream.send(line[:10])
        h.wait_until(lambda: server.stats()["ingest"]["bytes_total"] >= bytes_before + 2 * len(line) + 10, what="second partial chunk")
        stream.send(line[10:])
        assert stream.read_until(lambda o: o.get("ack") == 3, timeout=10) == {"ack": 3, "samples": 3}
        stream.finish_request()
        stream.read_to_eof(timeout=15)
        acks, _, summary = h.split_ingest_reply(stream.received)
        # Every ack line says something new (the rest of the first line and the second may
        # arrive in one read or two: [2, 3] or [1, 2, 3]).
        pairs = [(a["ack"], a["samples"]) for a in acks]
        assert pairs[-1] == (3, 3) and pairs[0][0] >= 1 and len(set(pairs)) == len(pairs), stream.received
        assert summary["acked_lines"] == 3 and summary["samples"] == 3
    finally:
        stream.close()


def _bad_lines_case(ids):
    good = f"{ids}-good"
    ts = h.now_ms()
    lines = [
        # (line, expected rejection code or None, ...)
        ({"server_id": good, "metric_name": "m_a", "value": 1.25, "ts": ts}, None),
        ('{"server_id":"%s","metric_name":"m_a","value":2' % good, "invalid_json"),            # truncated object
        ('{"server_id":"%s","metric_name":"m_a","value":NaN}' % good, "non_finite_value"),
        ('{"server_id":"%s","metric_name":"m_a","value":1e400}' % good, "non_finite_value"),  # overflow
        ({"server_id": good, "value": 3}, "missing_field"),                                   # no metric_name
        ({"server_id": "bad id!", "metric_name": "m_a", "value": 4}, "invalid_name"),
        ({"server_id": good, "metric_name": "m_b", "value": 5, "labels": "dc=eu"}, "invalid_labels"),
        ({"server_id": good, "metric_name": "m_b", "value": 5, "labels": ["dc", "eu"]}, "invalid_labels"),
        ({"server_id": good, "metric_name": "m_b", "value": 6, "ts": ts, "labels": {"z": "1", "a": "x"}}, None),
        ({"server_id": good, "metric_name": "m_c", "value": "7"}, "invalid_value"),
        ({"server_id": good, "metric_name": "m_c", "value": 7, "ts": -5}, "invalid_timestamp"),
        ('{"server_id":"%s","metric_name":"m_c","value":-Infinity}' % good, "non_finite_value"),
        ('{"server_id":"%s","metric_name":"\\ud800","value":1}' % good, "invalid_utf8"),
        ("[1,2,3]", "invalid_json"),
        ({"server_id": good, "metric_name": "m_c", "value": 1.2345678901234567e22, "ts": ts + 5}, None),
        ({"server_id": good, "metric_name": "m_a", "value": -3.5, "ts": ts + 10}, None),
        ({"server_id": good, "metric_name": "m_b", "value": 8, "ts": ts + 1, "labels": {"k": {"nested": 1}}}, "invalid_labels"),
        ({"server_id": good, "metric_name": "m_d", "value": 9, "ts": ts, "labels": {"n": 1.5, "b": True}}, None),
        ('{"server_id":"%s","metric_name":"m_d","value":1} trailing' % good, "invalid_json"),
        ({"server_id": good, "metric_name": "m_e", "value": 1, "ts": 0}, "invalid_timestamp"),
        ({"server_id": good, "metric_name": "m_e", "value": 1, "ts": 10**15}, "invalid_timestamp"),
        # Valid, but outside the server's window (defaults: 10 minutes ahead, 7 days behind).
        ({"server_id": good, "metric_name": "m_e", "value": 1, "ts": h.now_ms() + 3_600_000}, "timestamp_out_of_range"),
        ({"server_id": good, "metric_name": "m_e", "value": 1, "ts": h.now_ms() - 8 * 86_400_000}, "timestamp_out_of_range"),
        # Fractional ts is truncated; the last of repeated keys wins; unknown keys (even nested) are skipped.
        ('{"server_id":"%s","metric_name":"m_e","value":1,"value":2.5,"ts":%d.9,"extra":{"a":[1,{"b":null}]}}'
         % (good, ts + 20), None),
        ('{"server_id":"%s","metric_name":"m\\u005ff","value":4,"ts":%d}\r' % (good, ts), None),  # escaped name, CRLF
    ]
    return good, ts, lines


@pytest.mark.parametrize("client", ["curl-h2c", "curl-h1"])
def test_bad_lines_rejected_good_lines_kept(server, ids, client):
    good, ts, lines = _bad_lines_case(ids)
    body = h.ndjson(l for l, _ in lines)
    resp = h.ingest(server, body, client)
    assert resp.status == 200
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    expected = [(i + 1, code) for i, (_, code) in enumerate(lines) if code]
    assert [(e["line"], e["code"]) for e in errors] == expected, errors
    assert all(isinstance(e["reason"], str) and e["reason"] for e in errors)
    n_good = sum(1 for _, c in lines if c is None)
    assert summary == {"lines": len(lines), "samples": n_good, "acked_lines": len(lines), "acked_samples": n_good,
                       "rejected": len(expected), "heartbeats": 0}

    # Every good line is kept, with its exact value; nothing from a bad line leaked in.
    want = {
        (good, "m_a", ""): (2, -3.5, ts + 10),
        (good, "m_b", "a=x,z=1"): (1, 6, ts),
        (good, "m_c", ""): (1, 1.2345678901234567e22, ts + 5),
        (good, "m_d", "b=true,n=1.5"): (1, 9, ts),
        (good, "m_e", ""): (1, 2.5, ts + 20),
        (good, "m_f", ""): (1, 4, ts),
    }
    state = h.sse_rows(server, [good], lambda s: len(s) >= len(want) and all(
        k in s and s[k]["count"] == want[k][0] for k in want))
    assert set(state) == set(want)
    for k, (count, last, last_ts) in want.items():
        assert (state[k]["count"], state[k]["last"], state[k]["lastUpdate"]) == (count, last, last_ts), (k, state[k])
    assert (state[(good, "m_a", "")]["min"], state[(good, "m_a", "")]["max"]) == (-3.5, 1.25)


def test_rejections_by_code_counted_in_stats(server, ids):
    before = server.stats()["ingest"]["rejections"]
    body = h.ndjson(['{"x":', '{"server_id":"%s","metric_name":"m","value":NaN}' % ids,
                     '{"server_id":"%s","metric_name":"m","value":NaN}' % ids])
    resp = h.ingest(server, body, "curl-h1")
    assert resp.status == 200
    after = server.stats()["ingest"]["rejections"]
    assert after.get("invalid_json", 0) - before.get("invalid_json", 0) == 1
    assert after.get("non_finite_value", 0) - before.get("non_finite_value", 0) == 2


def test_rejection_details_are_capped_at_100(server, ids):
    """Per-line error replies are bounded (first 100); the summary still counts every rejection."""
    srv_id = f"{ids}-cap"
    body = h.ndjson(["{not json"] * 150 + [{"server_id": srv_id, "metric_name": "m", "value": 1}])
    resp = h.ingest(server, body, "curl-h2c")
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert [e["line"] for e in errors] == list(range(1, 101))
    assert summary["rejected"] == 150 and summary["samples"] == 1 and summary["lines"] == 151
    assert summary["acked_lines"] == 151 and summary["acked_samples"] == 1


def _line_of_length(n: int, server_id: str, value: float) -> bytes:
    """A valid NDJSON sample line of exactly n bytes (padded through an ignored key)."""
    base = json.dumps({"server_id": server_id, "metric_name": "len", "value": value, "pad": ""}, separators=(",", ":"))
    line = base[:-2] + "x" * (n - len(base)) + '"}'
    assert len(line) == n
    return line.encode()


@pytest.mark.own_server
def test_line_too_long(server_factory, ids):
    """--max-line-length 256: a 256-byte line is accepted, 257 and longer are rejected (line_too_long),
    also when the long line arrives in several pieces; the lines around it are kept."""
    srv = server_factory("--max-line-length", "256", name="maxline")
    sid = f"{ids}-len"
    body = h.ndjson([
        _line_of_length(100, sid, 1),
        _line_of_length(257, sid, 2),
        _line_of_length(256, sid, 3),
        _line_of_length(5000, sid, 4),
        _line_of_length(90, sid, 5),
    ])
    resp = h.ingest(srv, body, "curl-h2c")
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert [(e["line"], e["code"]) for e in errors] == [(2, "line_too_long"), (4, "line_too_long")]
    assert summary["samples"] == 3 and summary["lines"] == 5 and summary["acked_lines"] == 5

    # Streamed: the over-long line is split across request-body chunks that the server
    # demonstrably received separately (waiting on /api/stats ingest.bytes_total between them).
    stream = h.StreamingIngest(srv, proto="h2c")
    try:
        long_line = _line_of_length(700, sid, 6) + b"\n"
        first = _line_of_length(80, sid, 7) + b"\n" + long_line[:200]
        bytes_before = srv.stats()["ingest"]["bytes_total"]
        stream.send(first)
        h.wait_until(lambda: srv.stats()["ingest"]["bytes_total"] >= bytes_before + len(first), what="first chunk received")
        stream.send(long_line[200:450])
        h.wait_until(lambda: srv.stats()["ingest"]["bytes_total"] >= bytes_before + len(first) + 250, what="second chunk")
        stream.send(long_line[450:] + _line_of_length(90, sid, 8) + b"\n")
        stream.finish_request()
        stream.read_to_eof()
        _, errors, summary = h.split_ingest_reply(stream.received)
        assert [(e["line"], e["code"]) for e in errors] == [(2, "line_too_long")]
        assert summary["lines"] == 3 and summary["samples"] == 2 and summary["acked_lines"] == 3
    finally:
        stream.close()
    state = h.sse_rows(srv, [sid], lambda s: s.get((sid, "len", ""), {}).get("count") == 5)
    assert state[(sid, "len", "")]["min"] == 1 and state[(sid, "len", "")]["max"] == 8
    assert state[(sid, "len", "")]["avg"] == pytest.approx((1 + 3 + 5 + 7 + 8) / 5)


@pytest.mark.parametrize("client", ["curl-h1", "curl-h2c", "nghttp-h2c"])
def test_x_server_id_default_and_heartbeats(server, ids, client):
    default_id, explicit_id = f"{ids}-hdr", f"{ids}-explicit"
    body = h.ndjson([
        ": agent started",
        {"metric_name": "temp", "value": 20},
        "",
        {"metric_name": "temp", "value": 21, "server_id": None},  # null server_id: the default
        ":beat",
        {"metric_name": "temp", "value": 99, "server_id": explicit_id},
        ":beat",
        "   ",
    ])
    resp = h.ingest(server, body, client, headers={"x-server-id": default_id})
    assert resp.status == 200
    _, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert errors == []
    assert summary == {"lines": 8, "samples": 3, "acked_lines": 8, "acked_samples": 3, "rejected": 0, "heartbeats": 3}
    state = h.sse_rows(server, [default_id, explicit_id],
                       lambda s: s.get((default_id, "temp", ""), {}).get("count") == 2 and (explicit_id, "temp", "") in s)
    assert state[(default_id, "temp", "")]["last"] == 21
    assert state[(explicit_id, "temp", "")]["last"] == 99 and state[(explicit_id, "temp", "")]["count"] == 1


def test_missing_server_id_without_header_is_rejected(server):
    resp = h.ingest(server, h.ndjson([{"metric_name": "temp", "value": 1}]), "curl-h1")
    _, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert [(e["line"], e["code"]) for e in errors] == [(1, "missing_field")]
    assert summary["samples"] == 0


@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_invalid_x_server_id_header_is_400(server, proto):
    resp = h.curl(server, "/api/metrics/stream", proto=proto, method="POST",
                  data=h.ndjson([{"metric_name": "m", "value": 1}]), headers={"x-server-id": "not valid!"})
    assert resp.status == 400
    assert "error" in resp.json()


def test_large_body_over_h2c_flow_control(server, ids):
    """~4 MB in one HTTP/2 request: more than the 1 MiB stream window, so it only completes if the
    server keeps granting WINDOW_UPDATEs as it consumes the body."""
    n = 50_000
    sids = [f"{ids}-big-{i}" for i in range(5)]
    body = b"".join(b'{"server_id":"%s","metric_name":"bulk","value":%d,"labels":{"pad":"%s"}}\n'
                    % (sids[i % 5].encode(), i, b"p" * 20) for i in range(n))
    assert len(body) > 4 * (1 << 20)
    resp = h.ingest(server, body, "curl-h2c")
    acks, errors, summary = h.split_ingest_reply(resp.ndjson())
    assert errors == []
    assert summary["samples"] == n and summary["acked_samples"] == n and summary["acked_lines"] == n
    state = h.sse_rows(server, sids, lambda s: len(s) == 5 and all(r["count"] == n // 5 for r in s.values()))
    assert state[(sids[4], "bulk", "pad=" + "p" * 20)]["last"] == n - 1


@pytest.mark.own_server
def test_backpressure_with_a_tiny_buffer_drops_nothing(server_factory, ids):
    """--buffer-capacity 1000: two agents send 40,000 samples each at once; the writer pushes back
    (flow control) instead of dropping, and every sample is acknowledged."""
    srv = server_factory("--buffer-capacity", "1000", "--max-batch", "500", name="tinybuf")
    n = 40_000
    bodies = {c: b"".join(b'{"server_id":"%s-%s","metric_name":"bp","value":%d}\n' % (ids.encode(), c.encode(), i)
                          for i in range(n)) for c in ("h1", "h2c")}
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = {c: pool.submit(h.ingest, srv, bodies[c], "curl-" + c) for c in bodies}
        replies = {c: f.result(timeout=120) for c, f in futs.items()}
    for c, resp in replies.items():
        _, errors, summary = h.split_ingest_reply(resp.ndjson())
        assert errors == [] and summary["acked_samples"] == n and summary["acked_lines"] == n, (c, summary)
    stats = srv.stats()
    assert stats["writer"]["backpressure_events_total"] > 0, "the tiny buffer should have pushed back"
    assert stats["writer"]["samples_written_total"] == 2 * n
    assert stats["writer"]["buffered_samples"] == 0 and stats["writer"]["parked_samples"] == 0
