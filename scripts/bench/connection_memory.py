#!/usr/bin/env python3
"""Server memory per agent connection: RSS growth while N agents (one HTTP/2 connection and one
long-lived ingest stream each, metrics-loadgen) stream slowly, release builds, loopback.

    python3 scripts/bench/connection_memory.py [--agents 5000] [--rate 1] [--seconds 12]
"""
import argparse, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--agents", type=int, default=5000)
ap.add_argument("--rate", type=float, default=1, help="samples/s per agent")
ap.add_argument("--seconds", type=float, default=12)
a = ap.parse_args()

LOADGEN = os.path.join(common.ROOT, ".build", "release", "metrics-loadgen")
if not os.environ.get("RTD_SKIP_BUILD"):
    for product in ("dashboard-server", "metrics-loadgen"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=common.ROOT, check=True, stdout=subprocess.DEVNULL)
# Every simulated agent connects from 127.0.0.1: lift the per-address connection limit.
proc, port, _ = common.start_server("--max-connections-per-address", "0")
try:
    time.sleep(1)
    rss0 = common.rss_bytes(proc.pid)
    lg = subprocess.Popen([LOADGEN, "--url", f"http://127.0.0.1:{port}", "--agents", str(a.agents), "--rate", str(a.rate),
                           "--duration", str(a.seconds), "--ramp-up", "4", "--settle", "1", "--viewers", "0", "--tick-ms", "1000"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while lg.poll() is None:
        peak = max(peak, common.rss_bytes(proc.pid))
        time.sleep(0.5)
    print(f"{a.agents} agents at {a.rate:g} samples/s: server RSS {rss0 / 2**20:.0f} -> peak {peak / 2**20:.0f} MiB, "
          f"{(peak - rss0) / a.agents / 1024:.1f} KiB per agent connection")
finally:
    common.stop(proc)
