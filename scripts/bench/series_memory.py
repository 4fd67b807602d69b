#!/usr/bin/env python3
"""Bytes per active series: RSS of the server before and after creating N series (memory store
raw ring disabled so only live aggregates and rollups count).

    python3 scripts/bench/series_memory.py [--series 200000]
"""
import argparse, os, subprocess, tempfile, time
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("--series", type=int, default=200_000)
a = ap.parse_args()
build_release()
tmp = tempfile.mkdtemp()
body = os.path.join(tmp, "series.ndjson")
with open(body, "w") as f:
    f.write(ndjson_lines(a.series, servers=a.series // 5))
srv, port, _ = start_server("--memory-samples", "1")
try:
    time.sleep(1)
    rss0 = rss_bytes(srv.pid)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", "--data-binary", "@" + body,
                    f"http://127.0.0.1:{port}/api/metrics/stream"], check=True)
    deadline = time.time() + 30
    while stats(port)["series"]["count"] < a.series and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a tick or two: the broadcaster's table holds every series too
    rss1 = rss_bytes(srv.pid)
    print(f"{a.series:,} series: RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB, {(rss1 - rss0) / a.series:,.0f} bytes per series "
          f"(aggregator state, sketches, broadcaster table, transient buffers; heap in the steady state: Benchmarks SeriesMemory)")
finally:
    stop(srv)
