#!/usr/bin/env python3
"""Two server binaries alternated on the tiny-POST workload (h2load -c 10 -m 100, 10-line NDJSON
bodies, h2c): a fresh server per run, 1 s warm-up, then --seconds of load; prints the median and
best server CPU per request and req/s of each. For judging a change of a few per cent on this
noisy shared machine, where one pair of runs is not enough.

    python3 scripts/bench/tiny_posts_ab.py OLD_BINARY NEW_BINARY [--rounds 10 --seconds 4] [--lines 10]
"""
import argparse, os, statistics, tempfile
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("a")
ap.add_argument("b")
ap.add_argument("--rounds", type=int, default=10)
ap.add_argument("--seconds", type=int, default=4)
ap.add_argument("--lines", type=int, default=10, help="NDJSON lines per request body")
args = ap.parse_args()
tmp = tempfile.mkdtemp()
body = os.path.join(tmp, "small.ndjson")
with open(body, "w") as f:
    for i in range(args.lines):
        f.write('{"server_id":"web-%02d","metric_name":"cpu_usage","value":%.1f}\n' % (i % 10, i * 1.5))


def one(binary):
    import common
    common.SERVER = binary
    srv, port, _ = start_server()
    try:
        url = f"http://127.0.0.1:{port}/api/metrics/stream"
        h2load(["-D", "1", "-c", "10", "-m", "100", "-d", body, url])
        c0 = cpu_seconds(srv.pid)
        res = h2load(["-D", str(args.seconds), "-c", "10", "-m", "100", "-d", body, url])
        c1 = cpu_seconds(srv.pid)
        assert res["failed"] == 0, res["raw"]
        return (c1 - c0) / max(1, res["succeeded"]) * 1e6, res["req_s"]
    finally:
        stop(srv)


results = {args.a: [], args.b: []}
for r in range(args.rounds):
    for binary in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
        results[binary].append(one(binary))
for binary in (args.a, args.b):
    us = [x[0] for x in results[binary]]
    rps = [x[1] for x in results[binary]]
    print(f"{binary}: median {statistics.median(us):.2f} us/request (best {min(us):.2f}), "
          f"median {statistics.median(rps):,.0f} req/s (best {max(rps):,.0f}), {len(us)} runs")
