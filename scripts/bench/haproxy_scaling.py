#!/usr/bin/env python3
"""Throughput of 1, 2 and 3 instances behind HAProxy (scripts/cluster.sh, memory store, every
instance following its peers), and the proxy's overhead against a direct connection to one
instance; metrics-loadgen at saturation, loopback, same two cores for everything.

    python3 scripts/bench/haproxy_scaling.py [--seconds 10] [--agents 300] [--rate 2000]
"""
import argparse, json, os, re, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(__file__))
from common import *  # noqa: E402,F403

LOADGEN = os.environ.get("RTD_LOADGEN_BIN", os.path.join(ROOT, ".build", "release", "metrics-loadgen"))
ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=int, default=10)
ap.add_argument("--agents", type=int, default=300)
ap.add_argument("--rate", type=float, default=20000,
                help="samples/s per agent offered (the default saturates two cores; agents stop generating while "
                     "--max-pending-lines are unacknowledged, so the acknowledged rate is the capacity)")
a = ap.parse_args()
if not os.environ.get("RTD_SKIP_BUILD"):
    for product in ("dashboard-server", "metrics-loadgen"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)

PORTS = {"RTD_HAPROXY_PORT": "5702", "RTD_HAPROXY_TLS_PORT": "5743", "RTD_HAPROXY_STATS_PORT": "5704", "RTD_CLUSTER_BASE_PORT": "5711"}
env = dict(os.environ, RTD_STORE="memory", **PORTS)


def pids(d):
    """(instance pids, haproxy pid) of a cluster directory."""
    inst = [int(open(os.path.join(d, f)).read()) for f in sorted(os.listdir(d)) if re.match(r"instance-\d+\.pid$", f)]
    return inst, int(open(os.path.join(d, "haproxy.pid")).read().split()[0])


def loadgen(url, instances, proxy):
    out = tempfile.mktemp(suffix=".json")
    c0 = [cpu_seconds(p) for p in instances]
    h0 = cpu_seconds(proxy) if proxy else 0
    g0 = os.times().children_user + os.times().children_system
    subprocess.run([LOADGEN, "--url", url, "--quiet", "--agents", str(a.agents), "--connections", "3", "--rate", str(a.rate),
                    "--duration", str(a.seconds), "--ramp-up", "1", "--settle", "2", "--max-pending-lines", "5000", "--drain", "60",

                    "--json", out], check=False, stdout=subprocess.DEVNULL)
    r = json.load(open(out))
    r["cpu_instances"] = sum(cpu_seconds(p) for p in instances) - sum(c0)
    r["cpu_haproxy"] = (cpu_seconds(proxy) - h0) if proxy else 0
    r["cpu_loadgen"] = os.times().children_user + os.times().children_system - g0
    return r


rows = []
for n in (1, 2, 3):
    d = tempfile.mkdtemp(prefix="rtd-scale-")
    subprocess.run(["bash", "scripts/cluster.sh", "start", str(n), d], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        inst, proxy = pids(d)
        via = loadgen(f"http://127.0.0.1:{PORTS['RTD_HAPROXY_PORT']}", inst, proxy)
        rows.append((f"{n} instance(s) behind HAProxy", via))
        if n == 1:
            direct = loadgen(f"http://127.0.0.1:{PORTS['RTD_CLUSTER_BASE_PORT']}", inst, None)
            rows.append(("1 instance, direct (no proxy)", direct))
    finally:
        subprocess.run(["bash", "scripts/cluster.sh", "stop", d], cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)

print(f"{'':32s} {'acked/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s}  samples per CPU-second: {'instances':>9s} {'haproxy':>9s} {'loadgen':>9s}")
for name, r in rows:
    total = r["samples_acked"]
    per = lambda cpu: f"{total / cpu / 1e6:8.2f}M" if cpu > 0.05 else f"{'-':>9s}"
    print(f"{name:32s} {r['acked_per_second'] / 1e6:7.2f}M {r['ack_latency'].get('p50_ms', 0):7.1f} {r['ack_latency'].get('p99_ms', 0):7.1f}"
          f"  {'':22s} {per(r['cpu_instances'])} {per(r['cpu_haproxy'])} {per(r['cpu_loadgen'])}"
          f"   unacknowledged {r['unacked_lines_at_end']}")
base = rows[1][1]["acked_per_second"]
print(f"\nproxy overhead (1 instance): {1 - rows[0][1]['acked_per_second'] / base:.0%} fewer samples/s through HAProxy than direct")
