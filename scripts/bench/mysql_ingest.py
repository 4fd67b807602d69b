#!/usr/bin/env python3
"""Raw rows/s into MariaDB through the whole server (HTTP/2 in, MySQL out), side by side in one run
with the best raw Connector/C bulk path into the same table on the same database server; then the
ack lag (send -> acknowledged, i.e. committed) of a streaming agent at half and at full load.

    python3 scripts/bench/mysql_ingest.py [--rows 2000000] [--rounds 2] [--url mysql://u:p@127.0.0.1:3306/db]
        [--raw all|best|none] [--lag-seconds 0] [--server-arg=--store-write-lanes=2 ...]

Without --url a throwaway MariaDB is started in a temp dir (scripts/lib/mariadb.sh) and removed.
Rounds alternate baseline and server so drift on this shared machine hits both alike.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=2_000_000)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--url", default=None)
ap.add_argument("--lag-seconds", type=float, default=10, help="0 skips the ack-lag measurement")
ap.add_argument("--server-arg", action="append", default=[], help="extra dashboard-server option (repeatable), e.g. --server-arg=--store-write-lanes=2")
ap.add_argument("--straddle-minute", action="store_true",
                help="agents a second or two apart across a minute boundary: two bodies end the previous minute, two start "
                     "the current one, so every series gets late samples of a minute already sealed")
ap.add_argument("--raw", default="all", choices=["all", "best", "none"],
                help="raw baselines per round: all four variants, only the two-connection one (the best), or none")
a = ap.parse_args()

build_release()
tmp = tempfile.mkdtemp(prefix="rtd-mysql-bench-")
own_db = a.url is None
if own_db:
    url = subprocess.run(["bash", os.path.join(ROOT, "scripts/lib/mariadb.sh"), "start", os.path.join(tmp, "db")],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
else:
    url = a.url
m = re.match(r"^mysql://([^:@]+):([^@]*)@([^:/]+):(\d+)/(\w+)$", url)
user, password, host, port, _ = m.groups()
db = "rtd_bench"
store_url = f"mysql://{user}:{password}@{host}:{port}/{db}"


def sql(q):
    out = subprocess.run(["mariadb", "--no-defaults", "-h", host, "-P", port, "-u", user, f"-p{password}", "-N", "-B", "-e", q],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def mariadbd_pid():
    out = subprocess.run(["pgrep", "-f", f"mariadbd.*--port={port}"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def server_info():
    return sql("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size")[0]


try:
    sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    srv, p, _ = start_server("--store", store_url)  # creates the schema
    stop(srv)
    cbin = os.path.join(tmp, "mysql_raw_insert")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmariadb"], check=True, capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-O2", os.path.join(os.path.dirname(__file__), "mysql_raw_insert.c"), *flags, "-o", cbin], check=True)

    per_request = a.rows // 4
    bodies = [os.path.join(tmp, f"body-{k}.ndjson") for k in range(4)]
    total = per_request * 4

    def fresh_body():
        # Timestamps of "now": a live workload. (Data minutes old arrives as late samples whose
        # rollups merge into stored rows: the backfill case, slower by design.) Four bodies with
        # disjoint timestamps: an identical sample would be stored once, not four times. One base
        # for all four, so they do not straddle a minute boundary by chance (--straddle-minute
        # does it on purpose).
        now_ms = int(time.time() * 1000)
        minute_start = now_ms - now_ms % 60_000
        for k, body in enumerate(bodies):
            with open(body, "w") as f:
                if a.straddle_minute:
                    f.write(ndjson_lines(per_request, servers=10_000, base_ms=minute_start + (k - 2) * 1_000))
                else:
                    f.write(ndjson_lines(per_request, servers=10_000, base_ms=now_ms, offset_ms=k * (per_request // 10_000 + 1)))
    version, flush, pool = server_info()
    print(f"MariaDB {version}, innodb_flush_log_at_trx_commit={flush}, buffer pool {int(pool) >> 20} MiB; "
          f"{total:,} rows per run, 10,000 servers x 5 metrics; {os.cpu_count()} cores shared by everything")

    def quiesce(limit=60):
        """Waits until InnoDB has flushed the previous run's dirty pages and purged its history, so
        one run's background work does not land on the next (seconds waited are printed)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            st = dict(sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', 'Innodb_buffer_pool_pages_total', 'Innodb_history_list_length')"))
            if int(st["Innodb_buffer_pool_pages_dirty"]) < int(st["Innodb_buffer_pool_pages_total"]) // 100 and int(st.get("Innodb_history_list_length", 0)) < 1000:
                break
            time.sleep(0.5)
        return time.monotonic() - t0

    def baseline(mode, per_exec, connections=1):
        """`connections` client processes in parallel, each inserting its share of the rows."""
        sql(f"TRUNCATE TABLE {db}.rtd_samples")
        quiesce()
        dbpid = mariadbd_pid()
        d0 = cpu_seconds(dbpid) if dbpid else 0
        t0 = time.monotonic()
        share = total // connections
        procs = [subprocess.Popen([cbin, host, port, user, password, db, str(share), mode, str(per_exec), "65536", "50000", str(k * share)],
                                  stdout=subprocess.PIPE, text=True) for k in range(connections)]
        for pr in procs:
            pr.wait()
            assert pr.returncode == 0
        elapsed = time.monotonic() - t0
        dbcores = (cpu_seconds(dbpid) - d0) / elapsed if dbpid else float("nan")
        return total // connections * connections / elapsed, dbcores

    def through_server():
        sql(f"TRUNCATE TABLE {db}.rtd_samples")
        fresh_body()
        quiesce()
        srv, p, _ = start_server("--store", store_url, *a.server_arg)
        peak = {"rss": 0, "buffered": 0}
        done = threading.Event()

        def watch():
            while not done.wait(0.2):
                try:
                    st = stats(p)
                    peak["buffered"] = max(peak["buffered"], st["writer"]["buffered_samples"] + st["writer"]["parked_samples"])
                    peak["rss"] = max(peak["rss"], rss_bytes(srv.pid))
                except Exception:
                    pass

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        try:
            c0 = cpu_seconds(srv.pid)
            dbpid = mariadbd_pid()
            d0 = cpu_seconds(dbpid) if dbpid else 0
            # The response of a streaming request ends with its summary after the last ack, and an
            # ack means committed: h2load's time is the time until every row is durable.
            # Four agents, one stream each, in parallel (one h2load per body).
            t0 = time.monotonic()
            results = [None] * 4
            def one(k):
                results[k] = h2load(["-n", "1", "-c", "1", "-m", "1", "-d", bodies[k], f"http://127.0.0.1:{p}/api/metrics/stream"])
            threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            res = {"seconds": time.monotonic() - t0}
            c1 = cpu_seconds(srv.pid)
            peak["dbcores"] = (cpu_seconds(dbpid) - d0) / res["seconds"] if dbpid else float("nan")
            assert all(r["failed"] == 0 and r["succeeded"] == 1 for r in results), [r["raw"] for r in results]
            stored = int(sql(f"SELECT COUNT(*) FROM {db}.rtd_samples")[0][0])
            assert stored == total, f"stored {stored} != sent {total}"
            st = stats(p)["store"]
            peak["dbwait"] = st["database_wait_us_total"] / max(1, st["write_us_total"])
            peak["rollups"] = (st["rollups_upserted"], st["rollups_merged"], st["batches_committed"])
            return total / res["seconds"], (c1 - c0) / res["seconds"], peak
        finally:
            done.set()
            stop(srv)

    # Warm-up: one server run creates the 50,000 series rows, so every measured run is the steady
    # state (each server process still starts with an empty series cache, like a restart).
    through_server()
    best = {}
    srv_rates = []
    def run_server(r):
        rate, cores, peak = through_server()
        srv_rates.append(rate)
        print(f"round {r + 1}: through the server (h2c NDJSON in, MySQL out): {rate:>10,.0f} rows/s, server CPU {cores:.2f} cores, "
              f"MariaDB CPU {peak['dbcores']:.2f} cores, writer waiting on MariaDB {peak['dbwait']:.0%} of its time, peak buffered {peak['buffered']:,} samples, peak RSS {peak['rss'] >> 20} MiB, "
              f"rollups upserted/merged {peak['rollups'][0]:,}/{peak['rollups'][1]:,} in {peak['rollups'][2]} batches")

    for r in range(a.rounds):
        if r % 2 == 0:
            run_server(r)
        variants = {"all": (("array", 10_000, 1), ("array", 1_000, 1), ("multirow", 1_000, 1), ("array", 10_000, 2)),
                    "best": (("array", 10_000, 2),), "none": ()}[a.raw]
        for mode, per_exec, conns in variants:
            rate, dbcores = baseline(mode, per_exec, conns)
            best.setdefault((f"{mode} x {per_exec} rows/execute, {conns} connection{'s' if conns > 1 else ''}", conns), []).append(rate)
            print(f"round {r + 1}: raw Connector/C {mode:8s} {per_exec:>6} rows/execute, {conns} conn: {rate:>10,.0f} rows/s, MariaDB CPU {dbcores:.2f} cores")
        if r % 2 == 1:
            run_server(r)
    medians = {k: statistics.median(v) for k, v in best.items()}
    srate = statistics.median(srv_rates)
    if medians:
        (bm, _), brate = max(medians.items(), key=lambda kv: kv[1])
        print(f"best raw path: {bm}: {brate:,.0f} rows/s (median); server: {srate:,.0f} rows/s (median); "
              f"ratio {srate / brate:.2f}")

    # Ack lag: one curl h2c stream; each chunk's lag is from writing it to the ack that covers it.
    def ack_lag(rate_lines_per_s, seconds):
        sql(f"TRUNCATE TABLE {db}.rtd_samples")
        quiesce()
        srv, p, _ = start_server("--store", store_url, *a.server_arg)
        proc = subprocess.Popen(["curl", "-sS", "-N", "--http2-prior-knowledge", "-X", "POST", "-T", ".",
                                 "-H", "content-type: application/x-ndjson", f"http://127.0.0.1:{p}/api/metrics/stream"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        sent_at = []  # (cumulative lines, time written)
        lags = []
        lock = threading.Lock()

        def read():
            i = 0
            for line in proc.stdout:
                mm = re.match(rb'\{"ack":(\d+)', line)
                if not mm:
                    continue
                acked, t = int(mm.group(1)), time.monotonic()
                with lock:
                    while i < len(sent_at) and sent_at[i][0] <= acked:
                        lags.append(t - sent_at[i][1])
                        i += 1

        rd = threading.Thread(target=read, daemon=True)
        rd.start()
        chunk = 1_000
        lines = ndjson_lines(chunk * 50, servers=10_000).encode().splitlines(keepends=True)
        sent = 0
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            if k and k % 50 == 0:  # new timestamps each round: identical samples are stored once
                lines = ndjson_lines(chunk * 50, servers=10_000, offset_ms=(k // 50) * (chunk * 50 // 10_000 + 1)).encode().splitlines(keepends=True)
            data = b"".join(lines[(k % 50) * chunk:(k % 50 + 1) * chunk])
            proc.stdin.write(data)
            proc.stdin.flush()
            sent += chunk
            with lock:
                sent_at.append((sent, time.monotonic()))
            k += 1
            if rate_lines_per_s:
                delay = t0 + sent / rate_lines_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing
        elapsed = time.monotonic() - t0
        proc.stdin.close()
        proc.wait(timeout=120)
        rd.join(timeout=10)
        stop(srv)
        lags.sort()
        q = lambda x: lags[min(len(lags) - 1, int(x * (len(lags) - 1)))] * 1000
        return sent / elapsed, q(0.5), q(0.99), q(1.0)

    half = int(srate / 2)
    for label, rate in ((f"paced at {half:,} lines/s", half), ("unpaced (as fast as the stream takes)", 0)) if a.lag_seconds > 0 else ():
        achieved, p50, p99, mx = ack_lag(rate, a.lag_seconds)
        print(f"ack lag, one h2c stream {label}: {achieved:,.0f} lines/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms")
finally:
    if own_db:
        subprocess.run(["bash", os.path.join(ROOT, "scripts/lib/mariadb.sh"), "stop", os.path.join(tmp, "db")])
    shutil.rmtree(tmp, ignore_errors=True)
