"""HTTP/2 connection edges found by a review of the nghttp2 boundary: replies cut short when the
connection closes with bytes still queued, oversized header lists, request bodies sent after the
answer, and error text that is not a valid header value."""

import socket
import time

import pytest

import rtd_helpers as h

h2 = pytest.importorskip("h2", reason="pip install h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

AUTH = [(":scheme", "http"), (":authority", "localhost")]


def _client(server, window: int = 2**31 - 1):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384,
    })
    conn.initiate_connection()
    conn.increment_flow_control_window(window - 65535)
    sock.sendall(conn.data_to_send())
    return sock, conn


def send_pending(sock, conn) -> None:
    """Sends what the h2 state machine has queued (acks, window updates); a closed socket is fine."""
    out = conn.data_to_send()
    if out:
        try:
            sock.sendall(out)
        except OSError:
            pass


def _pump(sock, conn, done, timeout=15):
    """Reads and answers until `done(events)` or EOF; returns (events, eof)."""
    sock.settimeout(timeout)
    events = []
    deadline = time.monotonic() + timeout
    while not done(events):
        assert time.monotonic() < deadline, "timed out"
        data = sock.recv(1 << 16)
        if not data:
            return events, True
        events.extend(conn.receive_data(data))
        send_pending(sock, conn)
    return events, False


def test_goaway_with_replies_queued_delivers_every_byte(server):
    """The peer says GOAWAY after 100 requests and reads slowly: the server finishes the streams it
    accepted and closes only once their bytes are on the socket. It used to close at once when the
    last stream ended, dropping writes still queued in the channel (56 of 100 replies cut short)."""
    expected = len(h.curl(server, "/app.js").body)
    assert expected > 10_000
    sock, conn = _client(server)
    # A small receive buffer so the replies back up in the server's channel, not in our kernel.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    ids = []
    for _ in range(100):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/app.js"), *AUTH], end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    # GOAWAY (last stream 0, NO_ERROR) written by hand: h2's state machine refuses to read after its own.
    sock.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))
    # Not reading yet is the point of the test: the server must queue, not drop, what it cannot
    # write. (No event to await: the condition is the absence of reads.)
    time.sleep(0.5)
    got = {sid: 0 for sid in ids}
    ended = set()
    sock.settimeout(30)
    while len(ended) < len(ids):
        data = sock.recv(1 << 16)
        if not data:
            break
        for e in conn.receive_data(data):
            if isinstance(e, h2.events.DataReceived):
                got[e.stream_id] += len(e.data)
                conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                ended.add(e.stream_id)
            elif isinstance(e, h2.events.StreamReset):
                pytest.fail(f"stream {e.stream_id} reset: {e.error_code}")
        send_pending(sock, conn)
    sock.close()
    short = {sid: n for sid, n in got.items() if n != expected}
    assert len(ended) == len(ids) and not short, f"{len(ended)} of {len(ids)} ended; short replies: {list(short.items())[:5]}"


def test_no_rfc7540_priorities_and_priority_signals_are_ignored(server):
    """The server announces SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218): nghttp2 keeps no priority
    tree and no closed streams for it. Clients that still send RFC 7540 priorities (nghttp does:
    PRIORITY frames, dependencies in HEADERS, on streams already closed) are served all the same."""
    sock, conn = _client(server)
    events, _ = _pump(sock, conn, lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
    assert changed[0x9].new_value == 1, changed
    sids = []
    for i in range(30):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/health"), *AUTH], end_stream=True,
                          priority_weight=1 + i * 8, priority_depends_on=sids[-1] if sids else 0, priority_exclusive=i % 2 == 0)
        sids.append(sid)
        if i % 10 == 9:
            conn.prioritize(sids[0], weight=200, depends_on=sids[-1])  # a stream that may have closed already
            sock.sendall(conn.data_to_send())
            ended = set(sids[-10:])
            events, _ = _pump(sock, conn, lambda evs: ended <= {e.stream_id for e in evs if isinstance(e, h2.events.StreamEnded)})
            assert [dict(e.headers).get(":status") for e in events if isinstance(e, h2.events.ResponseReceived)].count("200") >= 10
    sock.close()


def test_oversized_header_list_is_refused_with_431(server):
    """HPACK lets a client repeat one indexed 4 KB header with one-byte references: 15,000 of them
    are 60 MB of header list in a few KB of frames. The list is capped at the advertised
    SETTINGS_MAX_HEADER_LIST_SIZE (64 KiB): 431, nothing kept, the connection stays usable."""
    sock, conn = _client(server)
    sid = conn.get_next_available_stream_id()
    big = "a" * 4000
    conn.send_headers(sid, [(":method", "GET"), (":path", "/health"), *AUTH] + [("accept", big)] * 2000, end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = _pump(sock, conn, lambda evs: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in evs))
    status = [dict(e.headers).get(":status") for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert status == ["431"], events
    sid2 = conn.get_next_available_stream_id()
    conn.send_headers(sid2, [(":method", "GET"), (":path", "/health"), *AUTH, ("accept", big)], end_stream=True)
    sock.sendall(conn.data_to_send())
    events, _ = _pump(sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid2 for e in evs))
    assert [dict(e.headers).get(":status") for e in events if isinstance(e, h2.events.ResponseReceived)] == ["200"]
    sock.close()


def test_body_after_a_refusal_is_bounded(server):
    """A request answered before its body (404 here; 401 without credentials is the same path)
    may send its body afterwards, but not forever: past 1 MiB the stream is reset with NO_ERROR
    (RFC 9113 §8.1). Before, the server read and dropped an endless body."""
    sock, conn = _client(server)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", "/no/such/route"), *AUTH])
    sock.sendall(conn.data_to_send())
    events, _ = _pump(sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in evs))
    chunk = b"x" * 16384
    sent = 0
    reset = None
    sock.settimeout(15)
    while reset is None and sent < (16 << 20):
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window >= len(chunk):
            conn.send_data(sid, chunk)
            sent += len(chunk)
            sock.sendall(conn.data_to_send())
            continue
        data = sock.recv(1 << 16)
        assert data, "connection closed"
        for e in conn.receive_data(data):
            if isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                reset = e
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    assert reset is not None, f"sent {sent} bytes without a reset"
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert sent < (4 << 20), sent
    sock.close()


@pytest.mark.parametrize("proto", ["h1", "h2c"])
@pytest.mark.parametrize("line,why", [
    (b"cpu,host=a usage=1\x012\n", "a control character in the rejected value"),
    (b"cpu,host=a usage=xxxxxxxxxxx\ncpu,host=a usage=xxxxxxxxxxx\n", "a cut that ends on a space"),
    (b"cpu,host=a usage=1\r2\n", "a carriage return inside the line"),
])
def test_influx_error_header_is_a_valid_header_value(server, proto, line, why):
    """`x-influxdb-error` carries the parser's message, which quotes the bad bytes: it is made
    printable ASCII and trimmed, so the client gets its 400 (curl reported PROTOCOL_ERROR on h2
    and an empty reply on HTTP/1.1, and Telegraf retried the batch forever)."""
    r = h.curl(server, "/write?db=telegraf", proto=proto, data=line)
    assert r.status == 400, (why, r)
    value = r.headers.get("x-influxdb-error", "")
    assert value and value == value.strip() and all(0x20 <= ord(c) < 0x7F for c in value), (why, value)
    assert b"error" in r.body
