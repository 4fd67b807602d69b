#!/usr/bin/env python3
"""Memory per active series, ours against VictoriaMetrics in the same run: the same series (hosts x
5 fields of Influx line protocol, one sample per series per round, timestamps 10 s apart, as
Telegraf sends them) into our /write and into VictoriaMetrics' /write; RSS growth of each process
divided by the series count.

    python3 scripts/bench/series_memory_vs_vm.py [--hosts 40000] [--rounds 6]

Ours keeps every series' live aggregates (windows, sketches, the broadcaster's table; memory
store raw ring off); VictoriaMetrics keeps its index and caches and writes samples to disk.
Needs Debian's victoria-metrics (installed here if missing and run as root).
"""
import argparse, os, random, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("--hosts", type=int, default=40_000, help="hosts; each has 5 series")
ap.add_argument("--rounds", type=int, default=6, help="samples per series (10 s apart)")
a = ap.parse_args()

ensure_victoria_metrics()
build_release()

tmp = tempfile.mkdtemp(prefix="rtd-mem-vm-")
series = a.hosts * 5
base_ns = (int(time.time()) - a.rounds * 10) * 1_000_000_000
rnd = random.Random(3)
bodies = []
for r in range(a.rounds):
    path = os.path.join(tmp, f"round{r}.lp")
    ts = base_ns + r * 10_000_000_000
    with open(path, "w") as f:
        for i in range(a.hosts):
            f.write("system,host=web-%06d,dc=eu cpu_usage=%.2f,memory_usage=%.2f,disk_usage=%.2f,load_avg=%.2f,net_rx_bytes=%d %d\n"
                    % (i, rnd.uniform(0, 100), rnd.uniform(0, 100), rnd.uniform(0, 100), rnd.uniform(0, 8), rnd.randrange(1 << 30), ts))
    bodies.append(path)

s = socket.socket(); s.bind(("127.0.0.1", 0)); vm_port = s.getsockname()[1]; s.close()
vm = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}", f"-storageDataPath={tmp}/vm", "-loggerLevel=ERROR"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ours, port, _ = start_server("--memory-samples", "1")


def vm_metric(name):
    with urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^' + re.escape(name) + r'(\{[^}]*\})? (\d+)', text, re.M)
    return int(m.group(2)) if m else 0


def post(url, path):
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "--data-binary", "@" + path, url], check=True)


try:
    deadline = time.time() + 30
    while True:
        try:
            vm_metric("vm_rows_inserted_total"); break
        except OSError:
            if time.time() > deadline: raise
            time.sleep(0.2)
    time.sleep(1)
    vm0, ours0 = rss_bytes(vm.pid), rss_bytes(ours.pid)
    for path in bodies:
        post(f"http://127.0.0.1:{vm_port}/write", path)
        post(f"http://127.0.0.1:{port}/write?db=bench", path)
    deadline = time.time() + 60
    while time.time() < deadline and (stats(port)["series"]["count"] < series or vm_metric("vm_rows_inserted_total") < series * a.rounds):
        time.sleep(0.5)
    time.sleep(5)  # VictoriaMetrics flushes its in-memory parts every few seconds; our broadcaster ticks
    vm1, ours1 = rss_bytes(vm.pid), rss_bytes(ours.pid)
    vm_series = vm_metric("vm_new_timeseries_created_total")
    per_vm, per_ours = (vm1 - vm0) / series, (ours1 - ours0) / series
    print(f"{series:,} series x {a.rounds} samples (VictoriaMetrics created {vm_series:,} series)")
    print(f"  ours:             RSS {ours0 / 2**20:.0f} -> {ours1 / 2**20:.0f} MiB, {per_ours:,.0f} bytes per series")
    print(f"  VictoriaMetrics:  RSS {vm0 / 2**20:.0f} -> {vm1 / 2**20:.0f} MiB, {per_vm:,.0f} bytes per series")
    print(f"  ratio ours / VictoriaMetrics: {per_ours / per_vm:.2f}")
finally:
    stop(ours)
    vm.terminate()
    vm.wait()
    shutil.rmtree(tmp, ignore_errors=True)
