#!/usr/bin/env python3
"""The same Influx line-protocol workload into VictoriaMetrics and into our /write, side by side in
one run (alternating rounds, same client, same cores): samples/s for both and the ratio.

Workload: POST /write bodies of --hosts lines (one per host, measurement `system`, 5 fields, no
timestamp: the server's clock, as Telegraf sends with `precision` unset), sent back to back by
h2load over HTTP/1.1 keep-alive (--h1, -c connections, -m 1) for both servers; ours also over h2c.
Counted by the servers themselves: VictoriaMetrics' vm_rows_inserted_total{type="influx"}, our
/api/stats ingest.samples_total.

    python3 scripts/bench/vs_victoriametrics.py [--seconds 10] [--rounds 3] [--hosts 10000] [--connections 4]

Needs Debian's victoria-metrics (installed here if missing and run as root).
"""
import argparse, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from common import *  # noqa: E402,F403

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--hosts", type=int, default=10_000, help="lines per request body (one per host, 5 fields each)")
ap.add_argument("--connections", type=int, default=4)
a = ap.parse_args()

ensure_victoria_metrics()
build_release()

tmp = tempfile.mkdtemp(prefix="rtd-vs-vm-")
body = os.path.join(tmp, "batch.lp")
rnd = random.Random(1)
with open(body, "w") as f:
    for i in range(a.hosts):
        f.write("system,host=web-%05d,dc=eu cpu_usage=%.2f,memory_usage=%.2f,disk_usage=%.2f,load_avg=%.2f,net_rx_bytes=%di\n"
                % (i, rnd.uniform(0, 100), rnd.uniform(0, 100), rnd.uniform(0, 100), rnd.uniform(0, 8), rnd.randrange(1 << 30)))
samples_per_request = a.hosts * 5

s = socket.socket(); s.bind(("127.0.0.1", 0)); vm_port = s.getsockname()[1]; s.close()
vm = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}", f"-storageDataPath={tmp}/vm", "-loggerLevel=ERROR"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ours, port, _ = start_server()


def vm_rows():
    with urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^vm_rows_inserted_total\{type="influx"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def our_rows():
    return stats(port)["ingest"]["samples_total"]


def run(url, h1, pid, counter):
    before, c0, t0 = counter(), cpu_seconds(pid), time.time()
    args = ["-D", str(a.seconds), "-c", str(a.connections), "-m", "1", "-d", body, "-H", "content-type: text/plain; charset=utf-8"]
    if h1:
        args.insert(0, "--h1")
    res = h2load(args + [url])
    time.sleep(1.0)  # let the server count the last bodies
    elapsed = time.time() - t0 - 1.0
    rows = counter() - before
    return {"samples_s": rows / elapsed, "req_s": res["req_s"], "failed": res["failed"],
            "cpu_cores": (cpu_seconds(pid) - c0) / (time.time() - t0)}


deadline = time.time() + 30
while time.time() < deadline:
    try:
        vm_rows(); break
    except OSError:
        time.sleep(0.2)
results = {"vm": [], "ours_h1": [], "ours_h2c": []}
try:
    for r in range(a.rounds):
        order = [("vm", f"http://127.0.0.1:{vm_port}/write", True, vm.pid, vm_rows),
                 ("ours_h1", f"http://127.0.0.1:{port}/write", True, ours.pid, our_rows),
                 ("ours_h2c", f"http://127.0.0.1:{port}/write", False, ours.pid, our_rows)]
        if r % 2:
            order.reverse()
        for name, url, h1, pid, counter in order:
            res = run(url, h1, pid, counter)
            results[name].append(res)
            print(f"round {r + 1}: {name:9s} {res['samples_s'] / 1e6:6.2f} M samples/s ({res['req_s']:,.0f} req/s of "
                  f"{samples_per_request:,} samples, {res['failed']} failed), server CPU {res['cpu_cores']:.2f} cores", flush=True)
finally:
    stop(ours)
    vm.send_signal(signal.SIGTERM)
    try:
        vm.wait(timeout=20)
    except subprocess.TimeoutExpired:
        vm.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


vm_m = median([x["samples_s"] for x in results["vm"]])
h1_m = median([x["samples_s"] for x in results["ours_h1"]])
h2_m = median([x["samples_s"] for x in results["ours_h2c"]])
print(f"\nmedians: VictoriaMetrics {vm_m / 1e6:.2f} M samples/s | ours HTTP/1.1 {h1_m / 1e6:.2f} M ({h1_m / vm_m:.2f}x) | "
      f"ours h2c {h2_m / 1e6:.2f} M ({h2_m / vm_m:.2f}x)")
