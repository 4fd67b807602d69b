#!/usr/bin/env python3
"""Series churn with idle expiry: servers come and go (new ids every few seconds, as containers
with generated names do); the live series count and the server's RSS must level off instead of
growing with every name ever seen. Release build, memory store, loopback.

    python3 scripts/bench/series_churn.py [--seconds 90] [--servers 2000] [--lifetime 5] [--idle-timeout 10]
"""
import argparse, http.client, json, os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=float, default=90)
ap.add_argument("--servers", type=int, default=2000, help="servers alive at any time")
ap.add_argument("--metrics", type=int, default=5)
ap.add_argument("--lifetime", type=float, default=5, help="seconds a server id lives before it is replaced")
ap.add_argument("--idle-timeout", type=int, default=10, help="--series-idle-timeout of the server")
a = ap.parse_args()

common.build_release()
# --memory-samples 1: the memory store's raw ring would otherwise dominate RSS; rollups stay bounded by its retention.
proc, port, _ = common.start_server("--series-idle-timeout", str(a.idle_timeout), "--memory-samples", "1")
try:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    start = time.time()
    next_report = start
    names = 0
    print("t(s)  live-series  expired-total  names-seen  rss(MiB)")
    while time.time() - start < a.seconds:
        t = time.time() - start
        generation = int(t / a.lifetime)
        ts = int(time.time() * 1000)
        lines = []
        for i in range(a.servers):
            sid = f"churn-{generation}-{i}"
            for m in range(a.metrics):
                lines.append(json.dumps({"server_id": sid, "metric_name": f"m{m}", "value": i % 100, "ts": ts}))
        body = ("\n".join(lines) + "\n").encode()
        conn.request("POST", "/api/metrics/stream", body=body, headers={"content-type": "application/x-ndjson"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        names = (generation + 1) * a.servers * a.metrics
        if time.time() >= next_report:
            st = common.stats(port)["series"]
            print(f"{t:5.0f}  {st['count']:11,}  {st['expired_total']:13,}  {names:10,}  {common.rss_bytes(proc.pid) / 2**20:8.0f}")
            next_report += 10
        time.sleep(0.5)
    st = common.stats(port)["series"]
    print(f"end: {st['count']:,} live series, {st['expired_total']:,} expired, {names:,} series names seen; "
          f"RSS {common.rss_bytes(proc.pid) / 2**20:.0f} MiB")
finally:
    common.stop(proc)
