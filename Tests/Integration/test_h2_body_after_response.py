"""A response that ends before the request body has fully arrived must not reset the stream:
the client may finish sending (RST_STREAM is only for ingestion that stops early). Regression test
for a race seen in CI: curl reported 'Stream error in the HTTP/2 framing layer' on POST /query when
its body arrived in a later packet than its headers."""

import socket

import pytest

h2 = pytest.importorskip("h2", reason="pip install h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402


def _read_until(sock, conn, done, timeout=10):
    sock.settimeout(timeout)
    events = []
    while not done(events):
        data = sock.recv(65536)
        if not data:
            break
        events.extend(conn.receive_data(data))
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return events


@pytest.mark.parametrize("path", ["/query?q=CREATE+DATABASE+%22telegraf%22", "/ping", "/no/such/route"])
def test_body_sent_after_the_response_is_not_reset(server, path):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "localhost"),
                            ("content-type", "application/x-www-form-urlencoded")])
    sock.sendall(conn.data_to_send())
    # Wait for the complete response before sending any body.
    events = _read_until(sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in evs))
    assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert not any(isinstance(e, h2.events.StreamReset) for e in events)
    # Now the body: the server must take it without a reset, and the connection stays usable.
    conn.send_data(sid, b"q=CREATE+DATABASE+%22telegraf%22", end_stream=True)
    sid2 = conn.get_next_available_stream_id()
    conn.send_headers(sid2, [(":method", "GET"), (":path", "/health"), (":scheme", "http"), (":authority", "localhost")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    events = _read_until(sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid2 for e in evs))
    assert not any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in events), events
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events), events
    sock.close()
