"""Helpers for the RealtimeDashboard end-to-end suite.

Everything here drives the real `dashboard-server` binary over real sockets with third-party
clients (curl, nghttp, h2load; Python's urllib for plain HTTP/1.1 GETs; the `h2` package's
protocol engine for the one HTTP/2 exchange curl 7.88 cannot observe). No test waits with a bare
sleep: they read streams until an event arrives or poll a condition against a deadline.
"""

from __future__ import annotations

import gzip as _gzip
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

REPO = Path(__file__).resolve().parents[2]
SERVER_BIN = os.environ.get("RTD_SERVER_BIN", str(REPO / ".build" / "debug" / "dashboard-server"))
TICK_MS = 200
HOST = "127.0.0.1"

# Every curl invocation that is not an open-ended stream gets this hard limit.
CURL_MAX_TIME = 30


# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------

def uid(prefix: str = "t") -> str:
    """A short id unique to this run, valid as a server id / metric name component."""
    return f"{prefix}{secrets.token_hex(4)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Polls `fn` until it returns something truthy, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def ndjson(objs: Iterable[Any]) -> bytes:
    """Encodes objects (dicts are JSON-encoded, str/bytes kept verbatim) as NDJSON lines."""
    out = bytearray()
    for o in objs:
        if isinstance(o, bytes):
            out += o
        elif isinstance(o, str):
            out += o.encode()
        else:
            out += json.dumps(o, separators=(",", ":")).encode()
        out += b"\n"
    return bytes(out)


def parse_ndjson(body: bytes) -> list[dict]:
    return [json.loads(l) for l in body.decode().splitlines() if l.strip()]


def split_ingest_reply(lines: list[dict]) -> tuple[list[dict], list[dict], Optional[dict]]:
    """Splits an ingest reply into (acks, errors, summary) and checks its overall shape."""
    acks = [l for l in lines if "ack" in l]
    errors = [l["error"] for l in lines if "error" in l and "summary" not in l]
    summaries = [l["summary"] for l in lines if "summary" in l]
    assert len(summaries) <= 1, f"more than one summary line: {lines}"
    if summaries:
        assert "summary" in lines[-1], f"summary must be the last reply line: {lines}"
    for l in lines:
        assert ("ack" in l) + ("error" in l) + ("summary" in l) == 1, f"unexpected reply line {l}"
    # Acks are cumulative: never go backwards.
    for a, b in zip(acks, acks[1:]):
        assert b["ack"] >= a["ack"] and b["samples"] >= a["samples"], f"acks went backwards: {acks}"
    return acks, errors, (summaries[0] if summaries else None)


def free_port() -> int:
    """A port nothing listens on now (for a server that must come back on the same port)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_refuses(port: int, host: str = HOST) -> bool:
    """True when a TCP connect to the port is refused."""
    try:
        s = socket.create_connection((host, port), timeout=2)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------

class ServerProcess:
    """One `dashboard-server` subprocess on ephemeral ports (cleartext + self-signed TLS)."""

    def __init__(self, workdir: Path, name: str = "server", extra_args: Iterable[str] = (), tick_ms: int = TICK_MS,
                 start_timeout: float = 60.0, port: int = 0, nofile: Optional[tuple[int, int]] = None):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.workdir / f"{name}.stderr.log"
        self.stdout_lines: list[str] = []
        self.port: int = 0
        self.tls_port: int = 0
        self.tick_ms = tick_ms
        # Development mode unless the test brings credentials (test_auth.py).
        auth = [] if any(str(a).startswith("--auth-file") for a in extra_args) else ["--no-auth"]
        self.cmd = [SERVER_BIN, "--host", HOST, "--port", str(port), "--tls-port", "0", "--tls-self-signed",
                    "--tick-ms", str(tick_ms), *auth, *extra_args]
        if nofile is not None:
            # The open-file limit (soft, hard) the server starts with (util-linux's prlimit execs it).
            self.cmd = ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--", *self.cmd]
        if not os.access(SERVER_BIN, os.X_OK):
            raise RuntimeError(f"server binary not found or not executable: {SERVER_BIN} (set RTD_SERVER_BIN)")
        self._stderr = open(self.stderr_path, "wb")
        self._listening = threading.Event()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before listening:\n{self.stderr_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not print 'listening' within {start_timeout}s:\n{self.stderr_text()}")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout_lines.append(line)
            m = re.match(r"^listening cleartext=(\d+) tls=(\d+|none)$", line)
            if m:
                self.port = int(m.group(1))
                self.tls_port = int(m.group(2)) if m.group(2) != "none" else 0
                self._listening.set()

    # URLs
    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def tls_base(self) -> str:
        return f"https://{HOST}:{self.tls_port}"

    def url(self, path: str, tls: bool = False) -> str:
        return (self.tls_base if tls else self.base) + path

    # Lifecycle
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (then SIGKILL if it does not exit within 15 s), or SIGKILL at once."""
        if self.proc.poll() is None and not graceful:
            self.kill()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        try:
            self._stderr.close()
        except Exception:
            pass

    def stderr_text(self, tail: int = 200) -> str:
        try:
            self._stderr.flush()
        except Exception:
            pass
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    # JSON endpoints
    def get_json(self, path: str, timeout: float = 10) -> Any:
        status, _, body = http_get(self.url(path), timeout=timeout)
        assert status == 200, f"GET {path} -> {status}: {body[:500]!r}"
        return json.loads(body)

    def stats(self) -> dict:
        return self.get_json("/api/stats")


# ---------------------------------------------------------------------------------------------
# Plain HTTP/1.1 GET (urllib)
# ---------------------------------------------------------------------------------------------

def http_get(url: str, headers: Optional[dict] = None, method: str = "GET", timeout: float = 10) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---------------------------------------------------------------------------------------------
# curl / nghttp one-shot requests
# ---------------------------------------------------------------------------------------------

# Transport names used across the suite.
#   h1        HTTP/1.1 cleartext             (curl --http1.1)
#   h2c       HTTP/2 prior knowledge         (curl --http2-prior-knowledge)
#   h2-tls    HTTP/2 over TLS, ALPN h2       (curl --http2 -k)
#   h1-tls    HTTP/1.1 over TLS, ALPN http/1.1 (curl --http1.1 -k)
CURL_PROTO_ARGS = {
    "h1": ["--http1.1"],
    "h2c": ["--http2-prior-knowledge"],
    "h2-tls": ["--http2", "-k"],
    "h1-tls": ["--http1.1", "-k"],
}
EXPECTED_HTTP_VERSION = {"h1": "1.1", "h2c": "2", "h2-tls": "2", "h1-tls": "1.1"}


def is_tls(proto: str) -> bool:
    return proto.endswith("-tls")


@dataclass
class Response:
    status: int
    http_version: str
    headers: dict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return parse_ndjson(self.body)


def _parse_header_dump(text: str) -> dict:
    """Headers of the last response in a curl -D dump (skips 100 Continue blocks)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    headers: dict = {}
    if not blocks:
        return headers
    for line in blocks[-1].splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers


def curl(server: ServerProcess, path: str, proto: str = "h1", method: Optional[str] = None, data: Optional[bytes] = None,
         headers: Optional[dict] = None, timeout: float = CURL_MAX_TIME, extra: Iterable[str] = ()) -> Response:
    """One request with curl; returns status, negotiated HTTP version, headers and body."""
    with tempfile.TemporaryDirectory(prefix="rtd-curl-") as d:
        body_path, hdr_path = os.path.join(d, "body"), os.path.join(d, "headers")
        cmd = ["curl", "-sS", "--max-time", str(timeout), *CURL_PROTO_ARGS[proto], "-o", body_path, "-D", hdr_path,
               "-w", "%{http_code} %{http_version}"]
        if method:
            cmd += ["-X", method]
        if data is not None:
            # No `Expect: 100-continue` round trip on HTTP/1.1.
            cmd += ["--data-binary", "@-", "-H", "Expect:"]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd += list(extra)
        cmd.append(server.url(path, tls=is_tls(proto)))
        p = subprocess.run(cmd, input=data if data is not None else b"", capture_output=True, timeout=timeout + 10)
        assert p.returncode == 0, f"curl failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode(errors='replace')}"
        code, version = p.stdout.decode().split()
        body = Path(body_path).read_bytes() if os.path.exists(body_path) else b""
        hdrs = _parse_header_dump(Path(hdr_path).read_text(errors="replace")) if os.path.exists(hdr_path) else {}
        return Response(int(code), version, hdrs, body)


def nghttp(server: ServerProcess, path: str, tls: bool = False, data: Optional[bytes] = None,
           headers: Optional[dict] = None, timeout: float = CURL_MAX_TIME) -> Response:
    """One HTTP/2 request with nghttp (h2c prior knowledge, or TLS with ALPN h2).

    The body comes from stdout; status and protocol from nghttp's HAR output."""
    with tempfile.TemporaryDirectory(prefix="rtd-nghttp-") as d:
        har = os.path.join(d, "out.har")
        cmd = ["nghttp", f"--har={har}"]
        if data is not None:
            data_path = os.path.join(d, "data")
            Path(data_path).write_bytes(data)
            cmd += ["-d", data_path]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(server.url(path, tls=tls))
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        assert p.returncode == 0, f"nghttp failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode(errors='replace')}"
        entry = json.loads(Path(har).read_text())["log"]["entries"][0]
        resp = entry["response"]
        hdrs = {h["name"].lower(): h["value"] for h in resp.get("headers", [])}
        version = resp.get("httpVersion", "")
        return Response(int(resp["status"]), version, hdrs, p.stdout)


def ingest(server: ServerProcess, body: bytes, client: str = "curl-h1", headers: Optional[dict] = None) -> Response:
    """POST /api/metrics/stream with one of: curl-h1, curl-h2c, curl-h2-tls, curl-h1-tls, nghttp-h2c, nghttp-h2-tls."""
    hdrs = {"content-type": "application/x-ndjson", **(headers or {})}
    tool, proto = client.split("-", 1)
    if tool == "curl":
        return curl(server, "/api/metrics/stream", proto=proto, method="POST", data=body, headers=hdrs)
    if tool == "nghttp":
        return nghttp(server, "/api/metrics/stream", tls=is_tls(proto), data=body, headers=hdrs)
    raise ValueError(client)


def gzip_bytes(data: bytes) -> bytes:
    return _gzip.compress(data)


# ---------------------------------------------------------------------------------------------
# Long-lived clients (curl subprocesses read line by line on a thread)
# ---------------------------------------------------------------------------------------------

class _LineReader:
    """Reads a subprocess's stdout line by line into a queue; EOF is a None entry."""

    def __init__(self, proc: subprocess.Popen, name: str):
        self.q: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self.eof = threading.Event()
        self._proc = proc
        self._t = threading.Thread(target=self._run, name=name, daemon=True)
        self._t.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        try:
            for line in iter(self._proc.stdout.readline, b""):
                self.q.put(line)
        finally:
            self.eof.set()
            self.q.put(None)

    def get(self, deadline: float) -> Optional[bytes]:
        """Next line, None at EOF; raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            line = self.q.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            self.q.put(None)  # stay at EOF
        return line


class _CurlProcess:
    """A curl subprocess with its own work dir, stderr file and line reader (shared by the
    streaming-ingest and SSE clients)."""

    def _start(self, cmd: list, prefix: str, name: str, stdin) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.cmd = cmd
        self._stderr = open(self.workdir / "curl.stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=self._stderr)
        self.reader = _LineReader(self.proc, name)

    def stderr(self) -> str:
        try:
            return (self.workdir / "curl.stderr").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class StreamingIngest(_CurlProcess):
    """A long-lived POST /api/metrics/stream through curl reading its body from a pipe.

    Uses `-T .` (curl's non-blocking stdin upload), not `-T -`: with `-T -` curl 7.88 blocks in
    read(2) on the empty pipe and cannot deliver response bytes (the acks) until more input or
    EOF arrives, so it cannot show acks streaming while the request is open. `-X POST` because
    `-T` alone means PUT. No `--max-time`: with it curl 7.88 ends the upload early."""

    def __init__(self, server: ServerProcess, proto: str = "h2c", headers: Optional[dict] = None, path: str = "/api/metrics/stream",
                 extra_args: Iterable[str] = ()):
        cmd = ["curl", "-sS", "-N", *CURL_PROTO_ARGS[proto], *extra_args, "-X", "POST", "-T", ".",
               "-H", "content-type: application/x-ndjson"]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(server.url(path, tls=is_tls(proto)))
        self._start(cmd, "rtd-stream-", "ingest-stream", subprocess.PIPE)
        self.received: list[dict] = []

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish_request(self) -> None:
        """Closes curl's stdin: curl ends the request body."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def read_raw(self, timeout: float = 10) -> Optional[bytes]:
        """The next raw output line (None at EOF)."""
        try:
            return self.reader.get(time.monotonic() + timeout)
        except TimeoutError:
            raise AssertionError(f"no output line within {timeout}s") from None

    def read(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        try:
            line = self.reader.get(deadline)
        except TimeoutError:
            raise AssertionError(f"no reply line within {timeout}s; received so far: {self.received}") from None
        assert line is not None, f"reply ended (EOF) early; received so far: {self.received}; curl stderr: {self.stderr()}"
        obj = json.loads(line)
        self.received.append(obj)
        return obj

    def read_until(self, pred: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.read(max(0.001, deadline - time.monotonic()))
            if pred(obj):
                return obj

    def read_to_eof(self, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        while True:
            try:
                line = self.reader.get(deadline)
            except TimeoutError:
                raise AssertionError(f"reply did not end within {timeout}s; received: {self.received}") from None
            if line is None:
                return out
            obj = json.loads(line)
            self.received.append(obj)
            out.append(obj)

    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.finish_request()
        except (BrokenPipeError, OSError):
            pass
        super().close()


@dataclass
class SSEEvent:
    event: str = "message"
    id: Optional[str] = None
    retry: Optional[int] = None
    data_text: str = ""
    comments: list = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads(self.data_text) if self.data_text else None

    @property
    def seq(self) -> int:
        return int(self.id.rsplit("-", 1)[1]) if self.id else -1

    @property
    def epoch(self) -> str:
        return self.id.rsplit("-", 1)[0] if self.id else ""

    @property
    def rows(self) -> list[dict]:
        d = self.data
        return d.get("data", []) if d else []


def row_key(r: dict) -> tuple:
    return (r["server_id"], r["metric_name"], r.get("labels", ""))


class SSEClient(_CurlProcess):
    """GET /api/dashboard/stream through curl (-N -i); parses status, headers and SSE events.

    `state` is the client-side view a dashboard would build: `init` replaces it, `update`
    drops the series it lists as `removed` and upserts the rows it carries."""

    def __init__(self, server: ServerProcess, query: str = "", proto: str = "h1", headers: Optional[dict] = None,
                 connect_timeout: float = 15):
        path = "/api/dashboard/stream" + (("?" + query) if query else "")
        cmd = ["curl", "-sS", "-N", "-i", *CURL_PROTO_ARGS[proto]]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(server.url(path, tls=is_tls(proto)))
        self._start(cmd, "rtd-sse-", "sse", subprocess.DEVNULL)
        self.status: Optional[int] = None
        self.status_line = ""
        self.headers: dict = {}
        self.events: list[SSEEvent] = []
        self.state: dict = {}
        self.fleet: dict = {}
        self._read_head(time.monotonic() + connect_timeout)

    def _read_head(self, deadline: float) -> None:
        try:
            line = self.reader.get(deadline)
            assert line is not None, f"SSE connection closed before a status line; stderr: {self.stderr()}"
            self.status_line = line.decode().strip()
            self.status = int(self.status_line.split()[1])
            while True:
                line = self.reader.get(deadline)
                assert line is not None, "SSE connection closed inside the header block"
                text = line.decode().rstrip("\r\n")
                if not text:
                    return
                k, _, v = text.partition(":")
                self.headers[k.strip().lower()] = v.strip()
        except TimeoutError:
            raise AssertionError(f"no SSE response head within the deadline; stderr: {self.stderr()}") from None

    def next_event(self, timeout: float = 10) -> SSEEvent:
        deadline = time.monotonic() + timeout
        ev = SSEEvent()
        data_lines: list[str] = []
        have_field = False
        while True:
            try:
                line = self.reader.get(deadline)
            except TimeoutError:
                raise AssertionError(f"no SSE event within {timeout}s (got {len(self.events)} so far)") from None
            if line is None:
                raise EOFError("SSE stream ended")
            text = line.decode().rstrip("\r\n")
            if text == "":
                if have_field:
                    ev.data_text = "\n".join(data_lines)
                    self._apply(ev)
                    self.events.append(ev)
                    return ev
                continue
            if text.startswith(":"):
                ev.comments.append(text[1:].strip())
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            have_field = True
            if name == "event":
                ev.event = value
            elif name == "id":
                ev.id = value
            elif name == "retry":
                ev.retry = int(value)
            elif name == "data":
                data_lines.append(value)

    def _apply(self, ev: SSEEvent) -> None:
        d = ev.data
        if not isinstance(d, dict):
            return
        if ev.event == "init":
            self.state = {}
            self.fleet = {}
        for r in d.get("removed", []):
            self.state.pop(row_key(r), None)
        for r in d.get("data", []):
            self.state[row_key(r)] = r
        for f in d.get("fleet", []):
            self.fleet[f["metric_name"]] = f

    def wait_event(self, pred: Callable[[SSEEvent], bool], timeout: float = 10, what: str = "an SSE event") -> SSEEvent:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; state={self.state}")
            ev = self.next_event(remaining)
            if pred(ev):
                return ev

    def wait_state(self, pred: Callable[[dict], bool], timeout: float = 10, what: str = "SSE state") -> SSEEvent:
        """Reads events until `pred(state)` holds; returns the event that made it true."""
        if self.events and pred(self.state):
            return self.events[-1]
        return self.wait_event(lambda _ev: pred(self.state), timeout, what)

    def wait_eof(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.reader.get(deadline)
            except TimeoutError:
                raise AssertionError(f"SSE stream did not end within {timeout}s") from None
            if line is None:
                return

    def __enter__(self) -> "SSEClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rows_for(state: dict, server_id: str, metric: Optional[str] = None) -> list[dict]:
    return [r for k, r in state.items() if k[0] == server_id and (metric is None or k[1] == metric)]


def sse_rows(server: ServerProcess, servers: Iterable[str], expect: Callable[[dict], bool], proto: str = "h1",
             timeout: float = 10, extra_query: str = "") -> dict:
    """Opens an SSE stream filtered to `servers` and reads until `expect(state)` holds; returns the state."""
    q = "servers=" + ",".join(servers) + (("&" + extra_query) if extra_query else "")
    with SSEClient(server, q, proto=proto) as sse:
        assert sse.status == 200, f"SSE status {sse.status}"
        sse.wait_state(expect, timeout=timeout, what=f"rows of {list(servers)}")
        return dict(sse.state)


# ---------------------------------------------------------------------------------------------
# A minimal HTTP/2 client on the `h2` package (hyper-h2's protocol engine).
# ---------------------------------------------------------------------------------------------

class H2Stream:
    """One streaming request over h2c prior knowledge, with the frames seen recorded.

    Needed for the shutdown test: curl 7.88 discards a complete response when the server follows
    it with RST_STREAM(NO_ERROR) while the upload is still open (RFC 9113 §8.1 allows the server to
    do that and says the client MUST NOT discard the response), so curl cannot observe the summary.
    The `h2` package drives the exchange; frames after GOAWAY are decoded with `hyperframe`."""

    def __init__(self, host: str, port: int, path: str, method: str = "POST", headers: Optional[dict] = None):
        import h2.config
        import h2.connection
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.lock = threading.Lock()
        self.stream_id = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"{host}:{port}")]
        hdrs += list((headers or {}).items())
        self.conn.send_headers(self.stream_id, hdrs, end_stream=False)
        self.sock.sendall(self.conn.data_to_send())
        self.status: Optional[int] = None
        self.body = bytearray()
        self.lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._partial = b""
        self.stream_ended = threading.Event()
        self.goaway: Optional[Any] = None
        self.reset: Optional[Any] = None
        self.closed = threading.Event()
        self.error: Optional[BaseException] = None
        self.events: list = []
        self.frames: list = []
        self._t = threading.Thread(target=self._run, name="h2-client", daemon=True)
        self._t.start()

    def _run(self) -> None:
        import h2.events
        from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame
        self.sock.settimeout(None)
        buf = b""
        after_goaway = False
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                    if len(buf) < 9 + length:
                        break
                    raw, buf = buf[:9 + length], buf[9 + length:]
                    frame.parse_body(memoryview(raw[9:]))
                    self.frames.append(frame)
                    if isinstance(frame, GoAwayFrame):
                        self.goaway = frame
                        after_goaway = True
                        continue
                    if after_goaway:
                        # hyper-h2 moves its connection to CLOSED on GOAWAY and rejects every later
                        # frame, although a graceful GOAWAY lets open streams finish: decode by hand.
                        if isinstance(frame, DataFrame) and frame.stream_id == self.stream_id:
                            self._on_data(frame.data)
                            if "END_STREAM" in frame.flags:
                                self.stream_ended.set()
                        elif isinstance(frame, RstStreamFrame) and frame.stream_id == self.stream_id:
                            self.reset = frame
                        continue
                    with self.lock:
                        events = self.conn.receive_data(raw)
                        self.events.extend(events)
                        for ev in events:
                            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == self.stream_id:
                                self.status = int(dict(ev.headers)[":status"])
                            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == self.stream_id:
                                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                                self._on_data(ev.data)
                            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == self.stream_id:
                                self.stream_ended.set()
                            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == self.stream_id:
                                self.reset = ev
                        out = self.conn.data_to_send()
                    if out:
                        try:
                            self.sock.sendall(out)
                        except OSError:
                            pass
        except OSError:
            pass
        except Exception as e:  # a protocol error: record it for the assertion message
            self.error = e
        finally:
            self.closed.set()
            self.lines.put(None)

    def _on_data(self, data: bytes) -> None:
        self.body += data
        buf = self._partial + data
        *complete, self._partial = buf.split(b"\n")
        for l in complete:
            self.lines.put(l)

    def send(self, data: bytes, end_stream: bool = False) -> None:
        with self.lock:
            self.conn.send_data(self.stream_id, data, end_stream=end_stream)
            out = self.conn.data_to_send()
        self.sock.sendall(out)

    def read_json(self, timeout: float = 10) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply line within {timeout}s; body so far: {bytes(self.body)!r}") from None
        if line is None:
            self.lines.put(None)
            raise AssertionError(f"connection closed; body so far: {bytes(self.body)!r}; "
                                 f"frames: {self.frames}; client error: {self.error!r}")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
