#!/usr/bin/env python3
"""The original project's load scenarios, replayed with payloads valid for our endpoints (release
server, memory store, loopback, bounded in time):

  1. its tester: 200 agent connections at 25 samples/s each (metrics-loadgen, one stream per agent);
  2. small POSTs with h2load as it used them: one sample per request to POST /api/metrics,
     `-c 100 -m 10` and `-c 10 -m 100`, h2c;
  3. SSE fan-out: 1,000 dashboard clients on /api/dashboard/stream while 2,000 agents stream
     (metrics-loadgen viewers), once with the original page's subscription (everything, every
     tick) and once with our dashboard's (one metric's fleet view + top 20).

    python3 scripts/bench/original_scenarios.py [--seconds 10]
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
from common import *  # noqa: E402,F403

LOADGEN = os.environ.get("RTD_LOADGEN_BIN", os.path.join(ROOT, ".build", "release", "metrics-loadgen"))

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=int, default=10)
a = ap.parse_args()
if not os.environ.get("RTD_SKIP_BUILD"):
    for product in ("dashboard-server", "metrics-loadgen"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def loadgen(port, *args):
    out = tempfile.mktemp(suffix=".json")
    subprocess.run([LOADGEN, "--url", f"http://127.0.0.1:{port}", "--quiet", "--json", out, *args], check=True,
                   stdout=subprocess.DEVNULL)
    return json.load(open(out))


def ms(h):
    return f"p50 {h.get('p50_ms', 0):.0f} ms, p99 {h.get('p99_ms', 0):.0f} ms" if h.get("count") else "–"


proc, port, _ = start_server()
try:
    # 1. The original tester's shape.
    r = loadgen(port, "--agents", "200", "--rate", "25", "--duration", str(a.seconds), "--server-prefix", "orig-")
    print(f"1. 200 agents x 25 samples/s: {r['acked_per_second']:,.0f} samples/s acknowledged, {r['samples_acked']:,} of "
          f"{r['samples_sent']:,}, ack {ms(r['ack_latency'])}, stream errors {r['stream_errors']}")

    # 2. Small POSTs, one sample each.
    body = tempfile.mktemp(suffix=".ndjson")
    with open(body, "w") as f:
        f.write('{"server_id":"web-01","metric_name":"cpu_usage","value":42.5}\n')
    for c, m in ((100, 10), (10, 100)):
        c0 = cpu_seconds(proc.pid)
        res = h2load(["-D", str(a.seconds), "-c", str(c), "-m", str(m), "-d", body, "-H", "content-type: application/x-ndjson",
                      f"http://127.0.0.1:{port}/api/metrics"])
        cpu = (cpu_seconds(proc.pid) - c0) / max(1, res["succeeded"]) * 1e6
        print(f"2. h2load -c {c} -m {m}, one-sample POSTs: {res['req_s']:,.0f} req/s, {res['failed']} failed, "
              f"{cpu:.1f} us server CPU/request")

finally:
    stop(proc)

# 3. SSE fan-out, each on a fresh server (so no stale series of earlier runs sit in the top 20).
for name, query in (("original page (everything, every tick)", "limit=100000"),
                    ("our dashboard (fleet view + top 20)", "metrics=cpu_usage&heatmap=1&top=20&fleet=0")):
    proc, port, _ = start_server()
    try:
        c0, t0 = cpu_seconds(proc.pid), time.time()
        peak = [0]
        import threading
        done = threading.Event()
        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(proc.pid))
                time.sleep(0.5)
        threading.Thread(target=watch, daemon=True).start()
        r = loadgen(port, "--agents", "2000", "--connections", "20", "--rate", "5", "--duration", str(a.seconds),
                    "--ramp-up", "2", "--settle", "3", "--viewers", "1000", "--viewer-query", query, "--server-prefix", "fan-")
        done.set()
        cpu = (cpu_seconds(proc.pid) - c0) / (time.time() - t0)
        st = stats(port)
        print(f"3. 1,000 viewers, {name}: {r['sse_bytes_per_update_avg']:,} bytes/update, "
              f"{r['sse_updates']:,} updates received, lag {ms(r['update_lag'])}, freshness {ms(r['freshness'])}, "
              f"viewers coalesced {st['sse']['coalesced_total']} times, server {cpu:.2f} cores, peak RSS {peak[0] / 2**20:.0f} MiB")
    finally:
        stop(proc)
