"""HTTP/1.1 edges found by a security review: bytes after an Upgrade request (which NIOHTTP1 no
longer parses), pipelined requests whose answers are never read, a request head dripped after a
first request, and `#` inside a credential's secret."""

from __future__ import annotations

import socket
import time

import pytest

import rtd_helpers as h

pytestmark = pytest.mark.own_server


def rss(srv: h.ServerProcess) -> int:
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return out
        if not data:
            return out
        out += data


def test_bytes_after_an_upgrade_request_are_not_buffered(server_factory):
    """An `Upgrade` request is answered as if the header were absent and the connection ends
    after it. NIOHTTP1 stops parsing after such a request, and everything sent after it used to
    pile up in its buffer on a connection that stayed open (1 GB sent, 1 GB of RSS)."""
    srv = server_factory(name="h1-upgrade")
    before = rss(srv)
    sock = socket.create_connection((h.HOST, srv.port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
    junk = b"x" * (1 << 20)
    sent = 0
    sock.settimeout(5)
    try:
        while sent < (200 << 20):
            sock.sendall(junk)
            sent += len(junk)
    except OSError:
        pass  # the server closed: what should happen
    reply = read_until_closed(sock, 5)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:80]
    assert sent < (200 << 20), "the server kept reading"
    assert rss(srv) < before + (64 << 20), (before, rss(srv))
    assert h.http_get(srv.url("/health"))[0] == 200


def test_pipelined_requests_whose_answers_are_not_read_are_bounded(server_factory):
    """Requests pipelined by a client that never reads the answers: the server stops reading
    while its answers wait for the socket (memory grew 35-40x the request bytes before)."""
    srv = server_factory(name="h1-pipeline")
    before = rss(srv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((h.HOST, srv.port))
    sock.settimeout(3)
    request = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    burst = request * 1000
    sent = 0
    try:
        while sent < (20 << 20):
            sock.sendall(burst)
            sent += len(burst)
    except (socket.timeout, OSError):
        pass  # the server stopped reading: our send buffer filled
    grown = rss(srv) - before
    sock.close()
    assert sent < (20 << 20), "the server read 20 MiB of requests whose answers nobody read"
    assert grown < (64 << 20), f"RSS grew {grown >> 20} MiB for {sent >> 10} KiB of requests"


def test_a_request_head_dripped_after_a_first_request_is_cut_off(server_factory):
    """After a first request, the next head dripped a byte at a time (one byte a minute held a
    connection forever) is cut off as the first request's would be (--idle-timeout caps it)."""
    srv = server_factory("--idle-timeout", "3", name="h1-drip")
    sock = socket.create_connection((h.HOST, srv.port), timeout=10)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 ")
    t0 = time.monotonic()
    closed = False
    for b in b"GET /ping HTTP/1.1\r\nX-Slow: " + b"a" * 30:
        try:
            sock.send(bytes([b]))
            sock.settimeout(1.0)
            if sock.recv(4096) == b"":
                closed = True
                break
        except socket.timeout:
            continue  # a second per byte: the drip
        except OSError:
            closed = True
            break
    elapsed = time.monotonic() - t0
    sock.close()
    assert closed, "still open after 30 s of drip"
    assert elapsed < 15, elapsed


def test_a_hash_inside_a_secret_is_part_of_it(server_factory, tmp_path, ids):
    """`#` starts a comment only as a field of its own; inside a secret it is part of it (the
    line used to load as a 16-character secret allowed every server id)."""
    creds = tmp_path / "credentials"
    creds.write_text("ingest web 0123456789abcdef#Zq9 web-*  # agents\nview v viewer-secret-0123456789\n")
    srv = server_factory("--auth-file", str(creds), name="h1-hash")
    line = h.ndjson([{"server_id": "db-99", "metric_name": "m", "value": 1}])
    good = h.curl(srv, "/api/metrics/stream", data=line, headers={"authorization": "Bearer 0123456789abcdef#Zq9"})
    assert good.status == 200
    assert h.split_ingest_reply(good.ndjson())[2]["acked_samples"] == 0, "db-99 is outside web-*"
    prefix_only = h.curl(srv, "/api/metrics/stream", data=line, headers={"authorization": "Bearer 0123456789abcdef"})
    assert prefix_only.status == 401
