"""SIGTERM: stop accepting, give open ingest streams their final acks and summary, end SSE streams,
exit 0 (each test runs its own server)."""

from __future__ import annotations

import signal
import socket
import time

import pytest

import rtd_helpers as h

pytestmark = pytest.mark.own_server


def _lines(sid: str, n: int, start: int = 0) -> bytes:
    return h.ndjson({"server_id": sid, "metric_name": "drain", "value": i} for i in range(start, start + n))


def test_sigterm_drains_h1_ingest_and_sse(server_factory, ids):
    srv = server_factory(name="drain-h1")
    sid = f"{ids}-drain"
    stream = h.StreamingIngest(srv, proto="h1")
    sses = [h.SSEClient(srv, f"servers={sid}", proto=p) for p in ("h1", "h2c", "h2-tls")]
    try:
        for sse in sses:
            assert sse.status == 200 and sse.next_event().event == "init"
        stream.send(_lines(sid, 7))
        assert stream.read_until(lambda o: "ack" in o and o["ack"] == 7) == {"ack": 7, "samples": 7}
        # Plus half a line: not a complete line, so not counted or acked.
        bytes_before = srv.stats()["ingest"]["bytes_total"]
        stream.send(b'{"server_id":"' + sid.encode() + b'","metric_na')
        h.wait_until(lambda: srv.stats()["ingest"]["bytes_total"] > bytes_before, what="partial line received")
        h.wait_until(lambda: srv.stats()["sse"]["clients"] == 3, what="3 SSE clients")

        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        summary = stream.read_until(lambda o: "summary" in o, timeout=15)["summary"]
        # The listeners were closed before streams were drained: no new connections now.
        assert h.port_refuses(srv.port) and h.port_refuses(srv.tls_port)
        assert summary["lines"] == 7 and summary["acked_lines"] == 7
        assert summary["samples"] == 7 and summary["acked_samples"] == 7 and summary["rejected"] == 0
        assert "shutting down" in summary.get("error", ""), summary

        for sse in sses:
            sse.wait_eof(timeout=15)
            assert sse.proc.wait(timeout=5) == 0, f"SSE client ended uncleanly: {sse.stderr()}"
        rc = srv.wait(timeout=max(0.1, 15 - (time.monotonic() - t0)))
        assert rc == 0
        assert time.monotonic() - t0 < 15
    finally:
        stream.close()
        for sse in sses:
            sse.close()


def test_sigterm_drains_h2_ingest_stream(server_factory, ids):
    """Same over h2c. Observed with the `h2` package's protocol engine: curl 7.88 drops a complete
    response that the server follows with RST_STREAM(NO_ERROR) while the upload is open (which
    RFC 9113 §8.1 permits), so curl cannot show the summary here."""
    pytest.importorskip("h2", reason="pip install h2")
    srv = server_factory(name="drain-h2")
    sid = f"{ids}-drain2"
    client = h.H2Stream(h.HOST, srv.port, "/api/metrics/stream", headers={"content-type": "application/x-ndjson"})
    sse = h.SSEClient(srv, f"servers={sid}", proto="h2c")
    try:
        assert sse.next_event().event == "init"
        client.send(_lines(sid, 5) + b": heartbeat\n")
        while True:
            o = client.read_json()
            if o.get("ack") == 6:
                break
        assert client.status == 200

        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        while True:
            o = client.read_json(timeout=15)
            if "summary" in o:
                break
        s = o["summary"]
        assert (s["lines"], s["acked_lines"], s["samples"], s["acked_samples"], s["heartbeats"]) == (6, 6, 5, 5, 1)
        assert "shutting down" in s.get("error", ""), s
        assert client.stream_ended.wait(10), "response stream must end (END_STREAM)"
        assert client.goaway is not None and client.goaway.error_code == 0, "GOAWAY(NO_ERROR) expected"
        assert h.port_refuses(srv.port)
        sse.wait_eof(timeout=15)
        assert srv.wait(timeout=max(0.1, 15 - (time.monotonic() - t0))) == 0
    finally:
        client.close()
        sse.close()


def test_drain_timeout_bounds_shutdown_and_new_connections_are_refused(server_factory):
    """A connection that never finishes its request keeps the drain waiting: meanwhile both ports
    refuse connections; after --drain-timeout the server closes it and exits 0."""
    srv = server_factory("--drain-timeout", "3", name="drain-timeout")
    hold = socket.create_connection((h.HOST, srv.port), timeout=10)
    try:
        # A request whose body never completes (the server answered; it waits for the rest of the body).
        hold.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        assert hold.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        h.wait_until(lambda: h.port_refuses(srv.port) and h.port_refuses(srv.tls_port), timeout=5,
                     what="both listeners closed")
        assert srv.alive(), "the server should still be draining the held connection"
        assert srv.wait(timeout=15) == 0
        elapsed = time.monotonic() - t0
        assert 2.5 <= elapsed < 15, elapsed
        hold.settimeout(5)
        assert hold.recv(4096) == b"", "the held connection is closed at the drain timeout"
    finally:
        hold.close()


def test_sigterm_idle_server_exits_zero_quickly(server_factory):
    srv = server_factory(name="idle")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 5
    assert h.port_refuses(srv.port)


def test_sigterm_during_influx_write_is_not_reported_as_success(server_factory, ids):
    srv = server_factory(name="drain-write")
    host = f"{ids}-tg"
    # Telegraf-like /write whose body is still being uploaded (chunked) when SIGTERM arrives.
    write = h.StreamingIngest(srv, proto="h1", path="/write?db=telegraf", extra_args=["-i"])
    try:
        write.send(f"cpu,host={host} v=1\ncpu,host={host} v=2\n".encode())
        h.wait_until(lambda: srv.stats()["ingest"]["samples_total"] >= 2, what="the first lines to be received")
        srv.signal(signal.SIGTERM)
        status_line = write.read_raw(timeout=15)
        # curl asks for `100 Continue` before a chunked upload; the server answers it at once.
        while status_line is not None and status_line.startswith(b"HTTP/1.1 1"):
            while status_line is not None and status_line.strip():  # the interim head's lines
                status_line = write.read_raw(timeout=15)
            status_line = write.read_raw(timeout=15)  # after its blank line: the final status
        assert status_line is not None, "no response"
        status = int(status_line.split()[1])
        assert status != 204 and status >= 500, f"an unfinished write must not be acknowledged: {status_line!r}"
    finally:
        write.close()
    assert srv.wait(timeout=15) == 0


def test_port_in_use_exits_nonzero_with_the_reason(server_factory, tmp_path):
    """A listener that cannot bind fails the start: the process names the error and exits 1. Before,
    the engine's loops, cancelled rather than shut down, spun on both cores and SIGTERM did nothing."""
    srv = server_factory(name="holder")
    with pytest.raises(RuntimeError) as e:
        h.ServerProcess(tmp_path / "second", name="second", port=srv.port, start_timeout=30)
    text = str(e.value)
    assert "exited with 1 before listening" in text, text
    assert "Address already in use" in text, text
