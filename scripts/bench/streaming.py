#!/usr/bin/env python3
"""Long streaming NDJSON bodies: h2load -c 4 -m 1 with a large file, h2c and TLS; prints samples/s,
server CPU (cores) and RSS.

    python3 scripts/bench/streaming.py [--lines 1000000]
"""
import argparse, os, tempfile
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("--lines", type=int, default=1_000_000)
ap.add_argument("--requests", type=int, default=8)
a = ap.parse_args()
build_release()
tmp = tempfile.mkdtemp()
body = os.path.join(tmp, "big.ndjson")
with open(body, "w") as f:
    f.write(ndjson_lines(a.lines))
size = os.path.getsize(body)
srv, port, tls = start_server("--tls-self-signed")
try:
    for name, url in (("h2c", f"http://127.0.0.1:{port}/api/metrics/stream"), ("tls h2", f"https://127.0.0.1:{tls}/api/metrics/stream")):
        before = stats(port)["ingest"]["samples_total"]
        c0 = cpu_seconds(srv.pid)
        res = h2load(["-n", str(a.requests), "-c", "4", "-m", "1", "-d", body, url])
        c1 = cpu_seconds(srv.pid)
        after = stats(port)["ingest"]["samples_total"]
        assert res["failed"] == 0, res["raw"]
        n = after - before
        print(f"{name}: {a.requests} x {size / 2**20:.1f} MiB bodies in {res['seconds']:.2f}s: {n / res['seconds']:,.0f} samples/s, "
              f"{a.requests * size / res['seconds'] / 2**20:,.0f} MiB/s, server CPU {(c1 - c0) / res['seconds']:.2f} cores, "
              f"RSS {rss_bytes(srv.pid) / 2**20:.0f} MiB")
finally:
    stop(srv)
