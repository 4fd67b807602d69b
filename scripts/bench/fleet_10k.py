#!/usr/bin/env python3
"""10,000 agents (one HTTP/2 connection each, as the original agents) + 500 SSE viewers, sustained:
errors, server RSS and CPU, ack latency, freshness p99 (metrics-loadgen, release builds, loopback).

    python3 scripts/bench/fleet_10k.py [--agents 10000] [--viewers 500] [--rate 5] [--seconds 60] [--ramp-up 10]
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

LOADGEN = os.environ.get("RTD_LOADGEN_BIN", os.path.join(common.ROOT, ".build", "release", "metrics-loadgen"))

ap = argparse.ArgumentParser()
ap.add_argument("--agents", type=int, default=10_000)
ap.add_argument("--viewers", type=int, default=500)
ap.add_argument("--rate", type=float, default=5, help="samples/s per agent")
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--tick-ms", type=int, default=200, help="each agent writes once per tick (1000: one write per second, as most agents do)")
ap.add_argument("--ramp-up", type=float, default=10)
ap.add_argument("--settle", type=float, default=5, help="seconds after ramp-up before measuring")
ap.add_argument("--tls", action="store_true")
ap.add_argument("--viewer-threads", type=int, default=1,
                help="the generator's event loops for viewers, apart from the agents' (0: shared, as before 2026-12-06)")
a = ap.parse_args()

if not os.environ.get("RTD_SKIP_BUILD"):
    for product in ("dashboard-server", "metrics-loadgen"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=common.ROOT, check=True, stdout=subprocess.DEVNULL)
# Every simulated agent connects from 127.0.0.1: lift the per-address connection limit (2,000 by default).
args = ["--max-connections-per-address", "0"] + (["--tls-self-signed"] if a.tls else [])
proc, port, tls_port = common.start_server(*args)
report_path = tempfile.mktemp(suffix=".json")
try:
    url = f"https://127.0.0.1:{tls_port}" if a.tls else f"http://127.0.0.1:{port}"
    cpu0, t0 = common.cpu_seconds(proc.pid), time.time()
    peak_rss = 0
    lg = subprocess.Popen([LOADGEN, "--url", url, "--insecure", "--agents", str(a.agents), "--rate", str(a.rate),
                           "--duration", str(a.seconds), "--ramp-up", str(a.ramp_up), "--settle", str(a.settle), "--viewers", str(a.viewers),
                           "--tick-ms", str(a.tick_ms), "--viewer-threads", str(a.viewer_threads), "--json", report_path])
    while lg.poll() is None:
        peak_rss = max(peak_rss, common.rss_bytes(proc.pid))
        time.sleep(1)
    cpu = (common.cpu_seconds(proc.pid) - cpu0) / (time.time() - t0)
    report = json.load(open(report_path))
    stats = common.stats(port)
finally:
    common.stop(proc)
summary = {
    "agents": a.agents, "viewers": a.viewers, "rate_per_agent": a.rate, "seconds": a.seconds, "tls": a.tls,
    "samples_acked_per_s": round(report["acked_per_second"]), "samples_sent": report["samples_sent"],
    "samples_acked": report["samples_acked"], "unacked_at_end": report["unacked_lines_at_end"],
    "errors": {"stream_errors": report["stream_errors"], "reconnects": report["reconnects"], "rejected": report["lines_rejected"],
               "causes": report.get("error_causes", {})},
    "ack_latency_ms": report["ack_latency"], "freshness_ms": report["freshness"], "age_at_tick_ms": report.get("age_at_tick"),
    "rows_resent_unchanged": report.get("rows_resent"), "update_lag_ms": report["update_lag"],
    "generator_timer_slip_ms": report.get("generator_timer_slip"),
    "sse_bytes_per_update_avg": report["sse_bytes_per_update_avg"],
    "server_cpu_cores": round(cpu, 2), "server_peak_rss_mib": round(peak_rss / 2**20),
    "server_sse_clients_at_end": stats["sse"]["clients"],
}
print(json.dumps(summary, indent=2))
