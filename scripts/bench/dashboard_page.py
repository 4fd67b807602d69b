#!/usr/bin/env python3
"""The dashboard page under a large fleet: 10,000 servers × 5 metrics, every value changing every
second, the page open in headless Chromium at 1280×720 (release server, loopback).

Measures, per view (fleet overview; with a drill-down open):
  - SSE bytes per tick the page receives (what EventSource hands it, plus framing);
  - frame intervals (requestAnimationFrame p50/p99/max) and the page's own parse+render time per update;
  - JS heap (performance.memory and CDP), DOM nodes, long tasks;
  - the server's tick cost (collect / publish, from /api/stats) and its CPU and RSS;
and, for contrast, the bytes of one tick of an unfiltered subscription to the same fleet.

    python3 scripts/bench/dashboard_page.py [--servers 10000] [--metrics 5] [--seconds 30]
"""
import argparse, json, os, sys, time, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Integration"))
import common  # noqa: E402
from rtd_browser import Browser  # noqa: E402
from rtd_feed import DEFAULT_METRICS, FleetFeeder  # noqa: E402


def unfiltered_tick_bytes(port, seconds=4.0):
    """Bytes of the largest update an unfiltered subscriber gets (every row of every series)."""
    sizes, current = [], 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dashboard/stream", timeout=30) as r:
        start = time.time()
        kind = None
        for line in r:
            if line.startswith(b"event:"):
                kind = line[6:].strip()
            current += len(line)
            if line == b"\n":
                if kind == b"update":
                    sizes.append(current)
                current = 0
                if time.time() - start > seconds and sizes:
                    break
    return max(sizes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args()
    common.build_release()
    proc, port, _ = common.start_server("--tick-ms", "1000")
    feed = FleetFeeder("127.0.0.1", port, a.servers, DEFAULT_METRICS[:a.metrics], prefix="n", interval=1.0, labels=False).start()
    browser = Browser()
    results = {"servers": a.servers, "metrics": a.metrics, "seconds": a.seconds}
    try:
        feed.wait_rounds(3, timeout=120)
        browser.open(f"http://127.0.0.1:{port}/#metric=cpu_usage&warn=80&crit=95")
        browser.wait(f"return document.getElementById('c-servers').textContent === '{a.servers}'", timeout=60, what="fleet counted")
        for name, setup in (("overview", None), ("drilldown", "n00042")):
            if setup:
                browser.click("#toptable tbody tr")
                browser.wait("return !document.getElementById('drill').hidden && document.querySelectorAll('#d-metrics .mcard').length > 0",
                             what="drill-down")
            time.sleep(2)
            browser.js("rtd.stats.recent = []; rtd.stats.maxUpdateBytes = 0; rtd.stats.updates = 0; rtd.stats.updateBytes = 0; rtd.perf.maxMs = 0;")
            cpu0, t0 = common.cpu_seconds(proc.pid), time.time()
            ticks = []
            frames = browser.frame_stats(a.seconds)
            cpu = (common.cpu_seconds(proc.pid) - cpu0) / (time.time() - t0)
            s = browser.js("return rtd.stats")
            st = common.stats(port)
            ticks.append(st["sse"].get("last_tick"))
            cdp = browser.performance_metrics()
            results[name] = {
                "updates": s["updates"], "avg_update_bytes": round(s["updateBytes"] / max(1, s["updates"])),
                "max_update_bytes": s["maxUpdateBytes"], **frames,
                "cdp_js_heap_used": cdp.get("JSHeapUsedSize"), "cdp_js_heap_total": cdp.get("JSHeapTotalSize"),
                "server_cpu_cores": round(cpu, 3), "server_rss_mb": round(common.rss_bytes(proc.pid) / 2**20, 1),
                "server_last_tick": ticks[-1],
            }
            browser.screenshot(f"bench-dashboard-{name}")
            print(name, json.dumps(results[name]), flush=True)
        results["unfiltered_update_bytes"] = unfiltered_tick_bytes(port)
        results["feeder_rounds"] = feed.rounds
        results["feeder_lines"] = feed.lines_sent
    finally:
        browser.quit()
        feed.stop()
        common.stop(proc)
    print(json.dumps(results, indent=2))
    ov = results["overview"]
    print(f"\nbytes/tick: page {ov['avg_update_bytes']:,} (max {ov['max_update_bytes']:,}) vs unfiltered "
          f"{results['unfiltered_update_bytes']:,} ({results['unfiltered_update_bytes'] / max(1, ov['avg_update_bytes']):.0f}x)")


if __name__ == "__main__":
    main()
