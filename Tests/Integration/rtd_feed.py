"""A simulated fleet for the dashboard tests and for trying the dashboard by hand.

One long-lived HTTP/1.1 chunked `POST /api/metrics/stream` carries every server's samples (the
server treats it like any agent stream); a reader thread drains the streamed acks so the server
never waits on us, and records the highest acknowledged line.

    python3 Tests/Integration/rtd_feed.py --url http://127.0.0.1:4002 --servers 2000 --interval 1

Values are per-server random walks around a per-server base, so a few servers run hot, the
fleet's distribution has a shape, and every tick changes something.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from typing import Optional, Sequence
from urllib.parse import urlparse

DEFAULT_METRICS = ("cpu_usage", "memory_usage", "disk_usage", "load_avg", "net_rx_bytes")


class FleetFeeder:
    """Streams `servers × metrics` samples every `interval` seconds until stopped.

    `pause(ids)` stops sending for some servers (to make them stale); `set_value(id, metric, v)` pins
    a value (to make a server the worst one)."""

    def __init__(self, host: str, port: int, servers: int, metrics: Sequence[str] = DEFAULT_METRICS,
                 prefix: str = "srv-", interval: float = 1.0, seed: int = 7, labels: bool = True):
        self.host, self.port = host, port
        self.ids = [f"{prefix}{i:05d}" for i in range(1, servers + 1)]
        self.metrics = list(metrics)
        self.interval = interval
        self.labels = labels
        rnd = random.Random(seed)
        self.base = {sid: rnd.uniform(5, 60) + (35 if rnd.random() < 0.03 else 0) for sid in self.ids}
        self.value = {(sid, m): self.base[sid] for sid in self.ids for m in self.metrics}
        self.rnd = rnd
        self.pinned: dict[tuple[str, str], float] = {}
        self.paused: set[str] = set()
        self.lines_sent = 0
        self.acked_lines = 0
        self.rounds = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._round_done = threading.Condition()
        self._sock: Optional[socket.socket] = None
        self._sender = threading.Thread(target=self._run, name="fleet-feeder", daemon=True)
        self._reader: Optional[threading.Thread] = None

    # Control
    def start(self) -> "FleetFeeder":
        self._sender.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sender.join(timeout=10)
        self._close()

    def pause(self, ids) -> None:
        self.paused.update(ids)

    def resume(self, ids) -> None:
        self.paused.difference_update(ids)

    def set_value(self, sid: str, metric: str, v: float) -> None:
        self.pinned[(sid, metric)] = v

    def wait_rounds(self, n: int, timeout: float = 30) -> None:
        """Waits until `n` more rounds were sent."""
        target = self.rounds + n
        deadline = time.monotonic() + timeout
        with self._round_done:
            while self.rounds < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"feeder sent {self.rounds} of {target} rounds in {timeout}s; errors: {self.errors[-3:]}")
                self._round_done.wait(left)

    def wait_acked(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_lines < self.lines_sent:
            if time.monotonic() > deadline:
                raise AssertionError(f"acked {self.acked_lines} of {self.lines_sent} lines; errors: {self.errors[-3:]}")
            time.sleep(0.05)

    # Internals
    def _connect(self) -> None:
        self._close()
        s = socket.create_connection((self.host, self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"POST /api/metrics/stream HTTP/1.1\r\nHost: feeder\r\ncontent-type: application/x-ndjson\r\n"
                  b"transfer-encoding: chunked\r\n\r\n")
        self._sock = s
        self.lines_sent = 0
        self.acked_lines = 0
        self._reader = threading.Thread(target=self._read, args=(s,), name="fleet-feeder-acks", daemon=True)
        self._reader.start()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _read(self, s: socket.socket) -> None:
        buf = b""
        try:
            s.settimeout(None)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if not line.startswith(b"{"):
                        continue  # chunk sizes, status line, headers
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if "ack" in msg:
                        self.acked_lines = max(self.acked_lines, msg["ack"])
                    elif "error" in msg:
                        self.errors.append(str(msg["error"]))
        except OSError:
            return

    def _round(self) -> bytes:
        now = int(time.time() * 1000)
        out = []
        for i, sid in enumerate(self.ids):
            if sid in self.paused:
                continue
            for m in self.metrics:
                key = (sid, m)
                if key in self.pinned:
                    v = self.pinned[key]
                else:
                    v = self.value[key] + self.rnd.uniform(-2.5, 2.5)
                    v = min(99.9, max(0.1, v + (self.base[sid] - v) * 0.1))
                    self.value[key] = v
                if self.labels:
                    out.append('{"server_id":"%s","metric_name":"%s","value":%.2f,"ts":%d,"labels":{"dc":"%s"}}'
                               % (sid, m, v, now, "eu" if i % 2 else "us"))
                else:
                    out.append('{"server_id":"%s","metric_name":"%s","value":%.2f,"ts":%d}' % (sid, m, v, now))
        self.lines_sent += len(out)
        return ("\n".join(out) + "\n").encode() if out else b""

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if self._sock is None:
                    self._connect()
                body = self._round()
                if body:
                    # Chunks of ≤ 1 MiB keep the server's per-request buffers small.
                    for off in range(0, len(body), 1 << 20):
                        part = body[off:off + (1 << 20)]
                        self._sock.sendall(b"%x\r\n%b\r\n" % (len(part), part))
                with self._round_done:
                    self.rounds += 1
                    self._round_done.notify_all()
            except OSError as e:
                self.errors.append(f"send: {e}")
                self._close()
                self._stop.wait(0.5)  # the server may be restarting; reconnect
                continue
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            else:
                self._stop.wait(delay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:4002")
    ap.add_argument("--servers", type=int, default=500)
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--prefix", default="srv-")
    ap.add_argument("--duration", type=float, default=0, help="seconds (0 = until interrupted)")
    a = ap.parse_args()
    u = urlparse(a.url)
    f = FleetFeeder(u.hostname or "127.0.0.1", u.port or 80, a.servers, a.metrics.split(","), a.prefix, a.interval).start()
    started = time.monotonic()
    try:
        while not a.duration or time.monotonic() - started < a.duration:
            time.sleep(5)
            print(f"rounds {f.rounds} lines {f.lines_sent} acked {f.acked_lines} errors {len(f.errors)}", flush=True)
    except KeyboardInterrupt:
        pass
    f.stop()


if __name__ == "__main__":
    main()
