"""Shared helpers for the benchmark scripts: start servers on loopback, read CPU and RSS from /proc."""
import json, os, re, signal, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER = os.environ.get("RTD_SERVER_BIN", os.path.join(ROOT, ".build", "release", "dashboard-server"))
CLK = os.sysconf("SC_CLK_TCK")


def build_release():
    if not os.environ.get("RTD_SKIP_BUILD"):
        subprocess.run(["swift", "build", "-c", "release", "--product", "dashboard-server"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)


def start_server(*args):
    """Starts dashboard-server on free ports; returns (process, cleartext port, tls port or None)."""
    auth = [] if any(a.startswith("--auth-file") for a in args) else ["--no-auth"]
    # Peak-throughput runs measure the engine, not the per-connection body-rate safety limit
    # (64 MiB/s by default; the peers compared against have none).
    rate = [] if "--max-body-rate" in args else ["--max-body-rate", "0"]
    # Its log (warnings and errors) goes to a file, shown by stop() when not empty: a benchmark
    # that counted errors can then say what the server saw.
    log = tempfile.NamedTemporaryFile(prefix="rtd-bench-server-", suffix=".log", delete=False)
    p = subprocess.Popen([SERVER, "--port", "0", "--tls-port", "0", "--log-level", "warning", *auth, *rate, *args],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    p.log_path = log.name
    log.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.match(r"listening cleartext=(\d+) tls=(\S+)", line)
        if m:
            return p, int(m.group(1)), (None if m.group(2) == "none" else int(m.group(2)))
    p.kill()
    raise RuntimeError("server did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
    path = getattr(p, "log_path", None)
    if path and os.path.exists(path):
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        os.unlink(path)
        # The development-mode notice is expected; anything else is worth seeing.
        notable = [l for l in lines if "no-auth" not in l and "development mode" not in l.lower()]
        if notable:
            print(f"server log ({len(notable)} lines), last ones:", *notable[-10:], sep="\n  ", file=sys.stderr)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=10) as r:
        return json.load(r)


def h2load(args):
    out = subprocess.run(["h2load", *args], capture_output=True, text=True).stdout
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    ok = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    return {"seconds": float(m.group(1)), "req_s": float(m.group(2)), "succeeded": int(ok.group(3)),
            "failed": int(ok.group(4)), "raw": out}


def ndjson_lines(n, servers=10_000, metrics=("cpu_usage", "memory_usage", "disk_io", "network_rx", "network_tx"), offset_ms=0,
                 base_ms=None):
    """`n` lines over `servers` servers; every (series, timestamp) is distinct, and bodies built with
    different `offset_ms` do not overlap (the MySQL store stores an identical sample once).
    Timestamps start at `base_ms` (default: now) + `offset_ms`."""
    base = (int(time.time() * 1000) if base_ms is None else base_ms) + offset_ms
    out = []
    for i in range(n):
        out.append('{"server_id":"srv-%d","metric_name":"%s","value":%.2f,"ts":%d}\n'
                   % (i % servers, metrics[(i // servers) % len(metrics)], (i * 7919 % 10000) / 100, base + i // servers))
    return "".join(out)


def ensure_victoria_metrics():
    """Installs Debian's victoria-metrics when missing (as root), or exits saying how."""
    import shutil
    if shutil.which("victoria-metrics") is None:
        if os.geteuid() != 0:
            sys.exit("victoria-metrics is missing: apt-get install victoria-metrics")
        subprocess.run(["apt-get", "install", "-y", "-q", "victoria-metrics"], check=True, stdout=subprocess.DEVNULL)
