"""Influx v1 compatibility: POST /write (line protocol, precision, gzip, partial writes), /query, /ping."""

from __future__ import annotations

import re

import pytest

import rtd_helpers as h

# precision -> (multiplier from ms, extra sub-ms digits) so the ms conversion truncates.
PRECISIONS = {
    "ns": lambda ms: ms * 1_000_000 + 456_789,
    "us": lambda ms: ms * 1_000 + 456,
    "ms": lambda ms: ms,
    "s": lambda ms: ms // 1000,
}


def _expected_ms(precision: str, ms: int) -> int:
    return ms - ms % 1000 if precision == "s" else ms


@pytest.mark.parametrize("proto", ["h1", "h2c"])
@pytest.mark.parametrize("precision", ["ns", "us", "ms", "s"])
def test_write_precision(server, ids, precision, proto):
    host = f"{ids}-{precision}"
    ms = h.now_ms() - 3_000
    t = PRECISIONS[precision](ms)
    body = (f"cpu,host={host},cpu=cpu0,region=eu usage_user=1.5,usage_system=2i {t}\n"
            f"mem,host={host} used=1024u,swapping=true,name=\"ignored string\" {t}\n").encode()
    resp = h.curl(server, f"/write?db=telegraf&precision={precision}", proto=proto, method="POST", data=body)
    assert resp.status == 204, resp.body
    assert resp.body == b""
    assert resp.http_version == h.EXPECTED_HTTP_VERSION[proto]

    want_ts = _expected_ms(precision, ms)
    state = h.sse_rows(server, [host], lambda s: len(s) == 4)
    labels = "cpu=cpu0,region=eu"  # canonical: tags other than host, sorted by key
    assert set(state) == {(host, "cpu_usage_user", labels), (host, "cpu_usage_system", labels),
                          (host, "mem_used", ""), (host, "mem_swapping", "")}
    assert state[(host, "cpu_usage_user", labels)]["last"] == 1.5
    assert state[(host, "cpu_usage_system", labels)]["last"] == 2
    assert state[(host, "mem_used", "")]["last"] == 1024
    assert state[(host, "mem_swapping", "")]["last"] == 1
    for row in state.values():
        assert row["lastUpdate"] == want_ts, (precision, row)


def test_write_default_precision_is_ns(server, ids):
    host = f"{ids}-defprec"
    ms = h.now_ms()
    resp = h.curl(server, "/write?db=x", method="POST", data=f"disk,host={host} free=7 {ms * 1_000_000 + 999_999}\n".encode())
    assert resp.status == 204
    state = h.sse_rows(server, [host], lambda s: len(s) == 1)
    assert state[(host, "disk_free", "")]["lastUpdate"] == ms


@pytest.mark.parametrize("proto", ["h1", "h2c", "h2-tls"])
def test_write_gzip(server, ids, proto):
    host = f"{ids}-gz"
    ms = h.now_ms()
    lines = "".join(f"net,host={host},iface=eth{i % 2} rx={i}i {ms + i}\n" for i in range(200)).encode()
    resp = h.curl(server, "/write?db=x&precision=ms", proto=proto, method="POST", data=h.gzip_bytes(lines),
                  headers={"Content-Encoding": "gzip"})
    assert resp.status == 204, resp.body
    state = h.sse_rows(server, [host], lambda s: len(s) == 2 and all(r["count"] == 100 for r in s.values()))
    assert state[(host, "net_rx", "iface=eth0")]["last"] == 198
    assert state[(host, "net_rx", "iface=eth1")]["last"] == 199
    assert state[(host, "net_rx", "iface=eth1")]["lastUpdate"] == ms + 199


def test_write_invalid_gzip_is_400(server):
    resp = h.curl(server, "/write?db=x", method="POST", data=b"definitely not gzip", headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    assert "error" in resp.json()


def test_write_gzip_members_are_all_inflated_and_broken_ones_refused(server, ids):
    """RFC 1952 bodies of several members are read whole; a member cut short, or bytes after
    the last one, are a 400 rather than a silent partial write."""
    host = f"{ids}-gzm"
    ms = h.now_ms()
    a = "".join(f"gzm,host={host} v={i}i {ms + i}\n" for i in range(50)).encode()
    b = "".join(f"gzm,host={host} v={i}i {ms + i}\n" for i in range(50, 100)).encode()
    resp = h.curl(server, "/write?db=x&precision=ms", method="POST", data=h.gzip_bytes(a) + h.gzip_bytes(b),
                  headers={"Content-Encoding": "gzip"})
    assert resp.status == 204, resp.body
    h.sse_rows(server, [host], lambda s: len(s) == 1 and next(iter(s.values()))["count"] == 100)
    whole = h.gzip_bytes(a)
    for broken in (whole[:-8], whole[:-1], whole[: len(whole) // 2], whole + b"junk", whole + h.gzip_bytes(b)[:20]):
        resp = h.curl(server, "/write?db=x&precision=ms", method="POST", data=broken, headers={"Content-Encoding": "gzip"})
        assert resp.status == 400, (len(broken), resp.body)
        assert "gzip" in resp.json()["error"]


def test_write_partial_400_keeps_good_lines(server, ids):
    host = f"{ids}-partial"
    s = h.now_ms() // 1000
    body = (f"cpu,host={host} a=1 {s}\n"
            "this line has no fields\n"
            f"cpu,host={host} b=NaN {s}\n"
            "cpu b=1\n"                         # no host tag and no x-server-id
            f"cpu,host={host} c=3 {s + 1}\n").encode()
    resp = h.curl(server, "/write?db=x&precision=s", method="POST", data=body)
    assert resp.status == 400
    assert resp.headers.get("content-type", "").startswith("application/json")
    err = resp.json()["error"]
    assert err.startswith("partial write"), err
    assert "3 of 5" in err and "line 2" in err and "line 3" in err and "line 4" in err
    state = h.sse_rows(server, [host], lambda st: len(st) == 2)
    assert set(state) == {(host, "cpu_a", ""), (host, "cpu_c", "")}
    assert state[(host, "cpu_c", "")]["lastUpdate"] == (s + 1) * 1000


def test_write_x_server_id_fallback_for_missing_host(server, ids):
    default_id = f"{ids}-hdr"
    resp = h.curl(server, "/write?db=x", method="POST", data=b"up value=1\n", headers={"x-server-id": default_id})
    assert resp.status == 204
    h.sse_rows(server, [default_id], lambda s: (default_id, "up_value", "") in s)


def test_write_unknown_precision_is_400(server):
    resp = h.curl(server, "/write?db=x&precision=fortnight", method="POST", data=b"m,host=a v=1\n")
    assert resp.status == 400
    assert "precision" in resp.json()["error"]


@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_query_create_database(server, proto):
    resp = h.curl(server, "/query", proto=proto, method="POST",
                  extra=["--data-urlencode", 'q=CREATE DATABASE "telegraf"'])
    assert resp.status == 200
    assert resp.json() == {"results": [{"statement_id": 0}]}
    resp = h.curl(server, "/query?q=CREATE%20DATABASE%20%22telegraf%22", proto=proto)
    assert resp.status == 200 and resp.json() == {"results": [{"statement_id": 0}]}


@pytest.mark.parametrize("proto", ["h1", "h2c"])
def test_ping(server, proto):
    resp = h.curl(server, "/ping", proto=proto)
    assert resp.status == 204 and resp.body == b""
    resp = h.curl(server, "/ping", proto=proto, extra=["-I"])
    assert resp.status == 204


def test_write_escapes_and_name_sanitising(server, ids):
    """Escaped spaces/commas/equals are honoured; bytes not allowed in names become '_'."""
    host = f"{ids}-esc"
    body = (f"disk\\ io,host={host},path=/var/lib,dev\\,ice=sda\\ 1 read\\=bytes=5i,busy%=0.5\n").encode()
    resp = h.curl(server, "/write?db=x", method="POST", data=body)
    assert resp.status == 204, resp.body
    state = h.sse_rows(server, [host], lambda s: len(s) == 2)
    labels = "dev_ice=sda_1,path=/var/lib"
    assert set(state) == {(host, "disk_io_read_bytes", labels), (host, "disk_io_busy_", labels)}, set(state)


def test_write_gzip_bomb_is_413_and_memory_stays_bounded(server):
    """80 MB of zeros compress to ~80 KB; inflation stops at the 64 MiB bound."""
    import gzip
    bomb = gzip.compress(b"0" * 80_000_000, compresslevel=9)
    assert len(bomb) < 200_000
    rss0 = server.stats()["memory"]["rss_bytes"]
    resp = h.curl(server, "/write?db=x", method="POST", data=bomb, headers={"Content-Encoding": "gzip"})
    assert resp.status == 413 and "decompressed body larger than" in resp.json()["error"]
    assert server.stats()["memory"]["rss_bytes"] < rss0 + 200_000_000
    assert h.curl(server, "/ready").status == 200


@pytest.mark.parametrize("proto", ["h1", "h2c", "h2-tls"])
def test_expect_100_continue_is_answered(server, ids, proto, tmp_path):
    """curl sends `Expect: 100-continue` for bodies over 1 MiB and waits for the interim answer
    (a second by default) before sending the body; the server answers at once."""
    import subprocess
    host = f"{ids}-exp"
    ms = h.now_ms()
    body = tmp_path / "big.lp"
    body.write_bytes("".join(f"exp,host={host} v={i}i {ms + i}\n" for i in range(30_000)).encode())
    out = subprocess.run(["curl", "-sv", *h.CURL_PROTO_ARGS[proto], "--expect100-timeout", "60", "--max-time", "30",
                          "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                          "--data-binary", f"@{body}", server.url("/write?precision=ms", tls=h.is_tls(proto))],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "204", out.stderr[-2000:]
    # The interim response came (without it curl would have sent the body only after 60 s,
    # past --max-time).
    assert re.search(r"^< HTTP/(1\.1|2) 100", out.stderr, re.M), out.stderr[-2000:]
    h.sse_rows(server, [host], lambda s: len(s) == 1 and next(iter(s.values()))["count"] == 30_000)


def _stored_gzip(host: str, n: int) -> bytes:
    """A valid gzip body of `n` line-protocol lines, stored without compression (its compressed
    size is its inflated size, so a test controls both)."""
    import gzip
    import time
    t0 = int(time.time() * 1000) - n
    lines = "".join(f"gz,host={host} v={i}i {t0 + i}\n" for i in range(n))
    return gzip.compress(lines.encode(), compresslevel=0)


def _write_gzip(srv, body: bytes):
    return h.curl(srv, "/write?db=x&precision=ms", method="POST", data=body, headers={"Content-Encoding": "gzip"})


def test_gzip_bodies_in_memory_are_bounded_across_the_server(server_factory, ids):
    """A gzip body is held whole until its end; many at once (1,000 streams of 32 MiB on one
    connection) were unbounded. Past --max-gzip-memory a request gets 503, and the bytes of the
    held body count until its samples are durable."""
    import socket
    srv = server_factory("--max-gzip-memory", "1500000")
    first = _stored_gzip(f"{ids}-a", 30_000)  # ~1 MB
    assert 900_000 < len(first) < 1_400_000
    s = socket.create_connection((h.HOST, srv.port))
    try:
        s.sendall(b"POST /write?db=x&precision=ms HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                  + f"Content-Length: {len(first)}\r\n\r\n".encode() + first[:700_000])
        h.wait_until(lambda: srv.stats()["ingest"]["gzip_bytes_held"] >= 700_000, what="the first body held")
        second = _stored_gzip(f"{ids}-b", 27_000)  # ~900 kB: over the bound beside the first
        resp = _write_gzip(srv, second)
        assert resp.status == 503 and "held in memory" in resp.json()["error"], resp.body
        s.sendall(first[700_000:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            assert chunk, "connection closed before the reply"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 204"), reply
    finally:
        s.close()
    h.wait_until(lambda: srv.stats()["ingest"]["gzip_bytes_held"] == 0, what="nothing held once durable")
    resp = _write_gzip(srv, second)
    assert resp.status == 204, resp.body


def test_large_gzip_body_reaches_the_store_in_batches_of_the_usual_size(server_factory, ids):
    """An inflated body is parsed in slices: its samples are submitted ~16k at a time, so the
    store gets several batches of at most --max-batch samples, not one of the whole body."""
    srv = server_factory("--max-batch", "20000")
    before = srv.stats()["writer"]
    body = _stored_gzip(f"{ids}-big", 100_000)
    resp = _write_gzip(srv, body)
    assert resp.status == 204, resp.body
    after = srv.stats()["writer"]
    assert after["samples_written_total"] - before["samples_written_total"] == 100_000
    assert after["batches_written_total"] - before["batches_written_total"] >= 5


def test_one_gzip_body_larger_than_the_budget_is_taken_when_nothing_else_is_held(server_factory, ids):
    """The budget bounds what many requests hold together; one body within the per-request bounds
    still fits an idle server whose budget is smaller than that body (it was refused from its
    second chunk on, by its own first chunks)."""
    srv = server_factory("--max-gzip-memory", "100000")
    body = _stored_gzip(f"{ids}-one", 30_000)  # ~1 MB, ten times the budget
    resp = _write_gzip(srv, body)
    assert resp.status == 204, resp.body
    h.wait_until(lambda: srv.stats()["ingest"]["gzip_bytes_held"] == 0, what="nothing held once durable")
