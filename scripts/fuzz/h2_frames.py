#!/usr/bin/env python3
"""Random HTTP/2 frame fuzzer for the server's nghttp2 boundary (h2c, loopback only).

Each iteration opens a connection, sends the client preface and a mix of valid and mutated frames
(random types, flags, stream ids, lengths, payload bytes, truncated HPACK blocks, window updates,
SETTINGS floods, RST_STREAM bursts), reads whatever comes back, and closes. After every batch the
server must still answer /health over a fresh connection. Bounded by --seconds and --iterations.

    python3 scripts/fuzz/h2_frames.py --port 4002 --seconds 60
"""
import argparse, os, random, socket, struct, sys, time, urllib.request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype & 0xFF, flags & 0xFF]) + struct.pack(">I", stream & 0x7FFFFFFF) + payload

# A valid HPACK block for POST /api/metrics/stream (literal headers without indexing).
def literal(name, value):
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v

VALID_HEADERS = (b"\x83"  # :method POST (static index 3)
                 + b"\x86"  # :scheme http
                 + b"\x44" + bytes([len(b"/api/metrics/stream")]) + b"/api/metrics/stream"  # :path literal, indexed name 4
                 + b"\x41" + bytes([len(b"localhost")]) + b"localhost"  # :authority
                 + literal("x-server-id", "fuzz-1"))
GOOD_LINE = b'{"metric_name":"fuzz","value":1}\n'

def one_connection(rng, port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(0.2)
    out = bytearray(PREFACE)
    out += frame(4, 0, 0, b"")  # SETTINGS
    stream = 1
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.25:
            hdr = bytearray(VALID_HEADERS)
            if rng.random() < 0.3 and hdr:
                for _ in range(rng.randint(1, 4)):
                    hdr[rng.randrange(len(hdr))] = rng.randrange(256)
            if rng.random() < 0.2:
                hdr = hdr[: rng.randrange(len(hdr) + 1)]
            out += frame(1, 0x4 | (0x1 if rng.random() < 0.3 else 0), stream, bytes(hdr))
            if rng.random() < 0.7:
                body = GOOD_LINE * rng.randint(0, 5)
                if rng.random() < 0.3:
                    body += os.urandom(rng.randint(0, 200))
                out += frame(0, 0x1 if rng.random() < 0.8 else 0, stream, body)
            stream += 2
        elif r < 0.45:
            ftype = rng.randrange(0, 12)
            payload = os.urandom(rng.choice([0, 1, 4, 5, 6, 8, 9, rng.randint(0, 300)]))
            out += frame(ftype, rng.randrange(256), rng.choice([0, stream, stream - 2, rng.randrange(1 << 31)]), payload)
        elif r < 0.55:
            out += frame(3, 0, max(1, stream - 2), struct.pack(">I", rng.randrange(16)))  # RST_STREAM
        elif r < 0.65:
            out += frame(8, 0, rng.choice([0, max(1, stream - 2)]), struct.pack(">I", rng.randrange(1 << 31)))  # WINDOW_UPDATE
        elif r < 0.75:
            entries = b"".join(struct.pack(">HI", rng.randrange(1, 10), rng.randrange(1 << 32)) for _ in range(rng.randint(0, 8)))
            out += frame(4, rng.choice([0, 1]), 0, entries)  # SETTINGS (maybe invalid)
        elif r < 0.85:
            out += frame(6, rng.choice([0, 1]), 0, os.urandom(8))  # PING
        else:
            out += os.urandom(rng.randint(1, 64))  # garbage
    try:
        if rng.random() < 0.1:
            cut = rng.randrange(len(out))
            out = out[:cut]
        s.sendall(bytes(out))
        deadline = time.time() + 0.3
        while time.time() < deadline:
            try:
                if not s.recv(65536):
                    break
            except socket.timeout:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()

def healthy(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return r.status == 200

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    start, n = time.time(), 0
    while n < a.iterations and time.time() - start < a.seconds:
        for _ in range(50):
            one_connection(rng, a.port)
            n += 1
        if not healthy(a.port):
            print(f"server unhealthy after {n} connections (seed {a.seed})")
            return 1
    print(f"h2 frame fuzz: {n} connections in {time.time() - start:.1f}s, server healthy (seed {a.seed})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
