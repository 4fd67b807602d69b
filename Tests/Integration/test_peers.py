"""Instances following each other's live series (`--peers`, Docs/scale-out.md) with the memory
store: a restarted peer's departed series leave, a series fed to two instances is one row, and
moves at once, and a peer that goes silent without a reset is reconnected."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

import rtd_helpers as h

pytestmark = pytest.mark.own_server


def rows_on(instance: h.ServerProcess, metric: str) -> list[dict]:
    """The rows of `metric` an instance shows (its own and its peers')."""
    with h.SSEClient(instance, f"metrics={metric}&fleet=0&limit=100000&origin=any") as sse:
        return sse.next_event(10).rows


def feed(instance: h.ServerProcess, rows: list[dict]) -> None:
    r = h.ingest(instance, h.ndjson(rows), "curl-h2c")
    assert h.split_ingest_reply(r.ndjson())[2]["acked_samples"] == len(rows)


def test_a_restarted_peer_leaves_no_ghost_series(server_factory, ids):
    """A follows B; B restarts without three of its series. B's fresh `init` is its whole list,
    so A drops what B no longer has (it used to keep them until its own idle timeout, 15 min by
    default, forever with --series-idle-timeout 0)."""
    b_port = h.free_port()
    b = server_factory(name="peer-b", tick_ms=250, port=b_port)
    a = server_factory("--peers", f"http://{h.HOST}:{b_port}", "--series-idle-timeout", "0", name="peer-a", tick_ms=250)
    old = [f"{ids}-old{i}" for i in range(3)]
    feed(b, [{"server_id": s, "metric_name": "pm", "value": 1} for s in old])
    h.wait_until(lambda: {r["server_id"] for r in rows_on(a, "pm")} == set(old), timeout=15, what="A shows B's series")
    b.signal(signal.SIGTERM)
    assert b.wait(timeout=30) == 0
    b2 = server_factory(name="peer-b2", tick_ms=250, port=b_port)
    new = f"{ids}-new"
    feed(b2, [{"server_id": new, "metric_name": "pm", "value": 2}])
    h.wait_until(lambda: {r["server_id"] for r in rows_on(a, "pm")} == {new}, timeout=20,
                 what="A shows only the restarted B's series")
    peers = a.stats()["peers"]  # /api/stats lists each followed peer
    assert len(peers) == 1 and peers[0]["connected"] is True and peers[0]["rows_total"] >= 4, peers


def test_one_series_fed_to_two_instances_and_moved_between_them(server_factory, ids):
    """One agent writing the same samples to A and to B, which A follows: A shows one row per
    key per tick, its own (each tick used to carry both rows, and the series' origin flipped).
    Then the agent moves to B: B's newer samples take over on A at once, not after a timeout."""
    b_port = h.free_port()
    b = server_factory(name="dup-b", tick_ms=250, port=b_port)
    a = server_factory("--peers", f"http://{h.HOST}:{b_port}", name="dup-a", tick_ms=250)
    sid = f"{ids}-dup"
    stop = threading.Event()
    targets = [a, b]

    def keep_feeding():
        v = 0
        while not stop.is_set():
            v += 1
            sample = [{"server_id": sid, "metric_name": "dm", "value": v, "ts": h.now_ms()}]
            for t in list(targets):
                feed(t, sample)
            stop.wait(0.1)

    t = threading.Thread(target=keep_feeding, daemon=True)
    t.start()
    try:
        h.wait_until(lambda: a.stats()["sse"]["peer_rows_total"] > 0, timeout=15, what="A received B's rows")
        with h.SSEClient(a, "metrics=dm&fleet=0&origin=any") as sse:
            for _ in range(12):  # 3 s of ticks
                ev = sse.next_event(5)
                mine = [r for r in ev.rows if r["server_id"] == sid]
                assert len(mine) <= 1, mine
        assert a.stats()["sse"]["peer_series"] == 0, "the series stays A's own"
        # The agent moves to B.
        targets.remove(a)
        h.wait_until(lambda: a.stats()["sse"]["peer_series"] == 1, timeout=5, what="B's newer samples take over on A")
        with h.SSEClient(b, "metrics=dm&fleet=0") as sse_b:
            on_b = sse_b.next_event(5).rows[0]["last"]
        h.wait_until(lambda: [r["last"] for r in rows_on(a, "dm")][0] >= on_b, timeout=5, what="A shows B's values")
    finally:
        stop.set()
        t.join(10)


def test_a_silent_peer_is_reconnected(server_factory, ids):
    """A stand-in peer answers the stream with one event and then says nothing, without closing:
    a peer lost to a power cut or a network split. A closes the stream after 45 s without a byte
    (heartbeats come at least every 20 s) and connects again (it used to wait forever)."""
    listener = socket.socket()
    listener.bind((h.HOST, 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            body = (b"event: init\nid: 1-1\ndata: {\"seq\":1,\"timestamp\":0,\"tick_ms\":1000,\"data\":[],\"fleet\":[]}\n\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                         + f"{len(body):x}\r\n".encode() + body + b"\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    a = server_factory("--peers", f"http://{h.HOST}:{port}", name="silent-a", tick_ms=250)
    try:
        h.wait_until(lambda: len(accepted) >= 1, timeout=15, what="first connection")
        h.wait_until(lambda: len(accepted) >= 2, timeout=75, interval=0.5, what="a reconnect after the silent stream timed out")
        assert a.alive()
    finally:
        listener.close()
        for c in accepted:
            c.close()
