"""The MySQL store end to end: the real server binary writing to the throwaway MariaDB
(scripts/lib/mariadb.sh), checked with SQL. Acknowledged means committed; nothing acknowledged is
lost or doubled across database outages, killed connections and shutdown."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time

import pytest

import rtd_helpers as h

pytestmark = pytest.mark.own_server


def start(server_factory, mariadb, db, *args, name="mysql"):
    return server_factory("--store", mariadb.url_for(db), *args, name=name)


def series_count(mariadb, db, sid) -> list:
    """(rows, distinct values, min, max) of the raw samples of server `sid`."""
    return [int(float(x)) if x is not None else None for x in mariadb.sql(
        "SELECT COUNT(*), COUNT(DISTINCT x.value), MIN(x.value), MAX(x.value) FROM rtd_samples x "
        f"JOIN rtd_series s ON s.id = x.series_id WHERE s.server_id = '{sid}'", db)[0]]


class Feeder:
    """Streams NDJSON lines with values 0, 1, 2, ... (one series) through one long-lived h2c
    request from a background thread, paced so the row counts stay small, until stopped."""

    def __init__(self, srv, sid: str, chunk: int = 200, pause: float = 0.01, proto: str = "h2c"):
        self.stream = h.StreamingIngest(srv, proto=proto)
        self.sid = sid
        self.sent = 0
        self.chunk = chunk
        self.pause = pause
        self._stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        base = h.now_ms()
        try:
            while not self._stop.is_set():
                lines = h.ndjson({"server_id": self.sid, "metric_name": "seq", "value": i, "ts": base + i}
                                 for i in range(self.sent, self.sent + self.chunk))
                self.stream.send(lines)  # blocks while the server applies backpressure
                self.sent += self.chunk
                time.sleep(self.pause)  # pacing, not synchronisation
        except Exception as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def latest_ack(self, timeout: float = 30) -> int:
        o = self.stream.read_until(lambda o: "ack" in o, timeout=timeout)
        return o["ack"]

    def wait_ack_at_least(self, n: int, timeout: float = 60) -> int:
        return self.stream.read_until(lambda o: o.get("ack", -1) >= n, timeout=timeout)["ack"]

    def finish(self, timeout: float = 60) -> dict:
        """Stops sending, ends the request and returns the final summary."""
        self._stop.set()
        self.thread.join(timeout=timeout)
        assert self.error is None, f"feeder failed: {self.error}"
        self.stream.finish_request()
        return self.stream.read_until(lambda o: "summary" in o, timeout=timeout)["summary"]

    def close(self):
        self._stop.set()
        self.stream.close()


def stored_rollups(mariadb, db, like: str) -> list:
    """(server, metric, labels, minute, count, sum, min, max) of the stored rollups of servers LIKE `like`."""
    return mariadb.sql(
        "SELECT s.server_id, s.metric_name, s.labels, r.minute, r.sample_count, r.value_sum, r.value_min, r.value_max FROM rtd_rollups r "
        f"JOIN rtd_series s ON s.id = r.series_id WHERE s.server_id LIKE '{like}' ORDER BY 1, 2, 3, 4", db)


def naive_rollups(mariadb, db, like: str) -> list:
    """The same, recomputed from the raw rows."""
    return mariadb.sql(
        "SELECT s.server_id, s.metric_name, s.labels, FLOOR(x.ts / 60000) * 60000, COUNT(*), SUM(x.value), MIN(x.value), MAX(x.value) "
        f"FROM rtd_samples x JOIN rtd_series s ON s.id = x.series_id WHERE s.server_id LIKE '{like}' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4", db)


def same_rollups(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[:5] != y[:5] or abs(float(x[5]) - float(y[5])) > 1e-6 * max(1.0, abs(float(y[5]))) \
                or float(x[6]) != float(y[6]) or float(x[7]) != float(y[7]):
            return False
    return True


def test_acknowledged_samples_are_committed_at_ack_time(server_factory, mariadb, mysql_db, ids):
    """No waiting after the ack: what was acknowledged is already in the tables, exactly once."""
    srv = start(server_factory, mariadb, mysql_db)
    sid = f"{ids}-acked"
    base = h.now_ms() - 1_000
    stream = h.StreamingIngest(srv, proto="h2c")
    try:
        for part in range(4):
            stream.send(h.ndjson({"server_id": sid, "metric_name": "v", "value": i, "ts": base + i, "labels": {"part": str(part)}}
                                 for i in range(part * 2_500, (part + 1) * 2_500)))
            stream.read_until(lambda o: o.get("ack", 0) >= (part + 1) * 2_500, timeout=30)
            assert series_count(mariadb, mysql_db, sid) == [(part + 1) * 2_500, (part + 1) * 2_500, 0, (part + 1) * 2_500 - 1]
    finally:
        stream.close()
    # HTTP/1.1 one-shot POST and Influx line protocol: a 2xx reply means committed too.
    r = h.ingest(srv, h.ndjson({"server_id": f"{sid}-h1", "metric_name": "v", "value": i} for i in range(100)), "curl-h1")
    assert r.status == 200, r.body
    assert series_count(mariadb, mysql_db, f"{sid}-h1")[0] == 100
    lp = "\n".join(f"sys,host={sid}-lp,dc=eu load={i}i,up={i * 2} {base + i}" for i in range(50)).encode()
    r = h.curl(srv, "/write?precision=ms", data=lp)
    assert r.status == 204, r.body
    assert series_count(mariadb, mysql_db, f"{sid}-lp")[0] == 100
    names = {row[0] for row in mariadb.sql(f"SELECT metric_name FROM rtd_series WHERE server_id = '{sid}-lp'", mysql_db)}
    assert names == {"sys_load", "sys_up"}
    assert mariadb.sql(f"SELECT DISTINCT labels FROM rtd_series WHERE server_id = '{sid}-lp'", mysql_db) == [["dc=eu"]]
    # The servers table knows all three servers.
    assert int(mariadb.scalar(f"SELECT COUNT(*) FROM rtd_servers WHERE server_id LIKE '{sid}%'", mysql_db)) == 3
    st = srv.stats()["store"]
    assert st["backend"] == "mysql" and st["healthy"] and st["samples_inserted"] >= 10_200


def test_rollups_equal_naive_recomputation_and_serve_history(server_factory, mariadb, mysql_db, ids):
    srv = start(server_factory, mariadb, mysql_db)
    sid = f"{ids}-roll"
    rng = random.Random(7)
    now = h.now_ms()
    m0 = now // 60_000 * 60_000 - 4 * 60_000  # four minutes ago: sealed at the next tick
    samples = [{"server_id": sid, "metric_name": metric, "value": round(rng.uniform(0, 100), 3), "ts": m0 + rng.randrange(0, 180_000)}
               for metric in ("cpu", "mem") for _ in range(600)]
    assert h.ingest(srv, h.ndjson(samples), "curl-h2c").status == 200

    def rollups():  # (metric, minute, count, sum, min, max)
        return [r[1:2] + r[3:] for r in stored_rollups(mariadb, mysql_db, sid)]

    def naive():
        return [r[1:2] + r[3:] for r in naive_rollups(mariadb, mysql_db, sid)]

    def same(a, b):
        return same_rollups([["", x[0], ""] + x[1:] for x in a], [["", y[0], ""] + y[1:] for y in b])

    # The samples arrive in random minute order, so each series' last late part is stored at the
    # next wall-clock minute (see the late samples below).
    h.wait_until(lambda: sum(int(r[2]) for r in rollups()) == 1_200, timeout=90, what="rollups of 1,200 samples")
    assert same(rollups(), naive()), (rollups(), naive())
    assert len(rollups()) == 6

    # Late samples for a sealed minute: history counts them at once (the aggregator's open parts
    # are merged into the answer), and they reach the stored row as one merge rollup at the next
    # wall-clock minute (one merge per series and minute, however many ticks bring late samples).
    late = [{"server_id": sid, "metric_name": "cpu", "value": v, "ts": m0 + 30_000} for v in (1000.5, -5.25)]
    assert h.ingest(srv, h.ndjson(late), "curl-h1").status == 200
    want_m0 = next(int(r[2]) for r in naive() if r[0] == "cpu" and int(r[1]) == m0)
    x = srv.get_json(f"/api/history?server_id={sid}&metric_name=cpu&from={m0}&to={m0 + 60_000}&raw=false")
    assert {p["ts"]: p["count"] for p in x["points"]} == {m0: want_m0}, (x["points"], want_m0)
    h.wait_until(lambda: sum(int(r[2]) for r in rollups()) == 1_202, timeout=90, what="late samples merged at the next minute")
    assert same(rollups(), naive())
    assert srv.stats()["store"]["rollups_merged"] >= 1

    # History from MySQL: minute rollups for the range...
    x = srv.get_json(f"/api/history?server_id={sid}&metric_name=cpu&from={m0 - 60_000}&to={now}&raw=false")
    assert x["kind"] == "rollup" and x["resolution_ms"] == 60_000
    by_minute = {int(r[1]): int(r[2]) for r in rollups() if r[0] == "cpu"}
    assert {p["ts"]: p["count"] for p in x["points"]} == by_minute
    first = next(p for p in x["points"] if p["ts"] == m0)
    row = next(r for r in naive() if r[0] == "cpu" and int(r[1]) == m0)
    assert (first["min"], first["max"]) == (float(row[4]), float(row[5]))
    # ... raw points for a short one (auto), exactly the stored samples.
    x = srv.get_json(f"/api/history?server_id={sid}&metric_name=cpu&from={m0}&to={m0 + 60_000}")
    want = sorted((s["ts"], s["value"]) for s in samples + late if s["metric_name"] == "cpu" and m0 <= s["ts"] < m0 + 60_000)
    assert x["kind"] == "raw" and x["resolution_ms"] == 0
    assert sorted((p["ts"], p["value"]) for p in x["points"]) == want
    # ... and rollups again when the raw points would exceed max_points.
    x = srv.get_json(f"/api/history?server_id={sid}&metric_name=cpu&from={m0}&to={m0 + 60_000}&max_points=5")
    assert x["kind"] == "rollup"


def test_restart_warms_live_aggregates_from_stored_rollups(server_factory, mariadb, mysql_db, ids):
    sid = f"{ids}-warm"
    now = h.now_ms()
    m0 = now // 60_000 * 60_000 - 3 * 60_000
    values = [float(v) for v in range(1, 121)]
    srv = start(server_factory, mariadb, mysql_db, name="warm-a")
    body = h.ndjson({"server_id": sid, "metric_name": "load", "value": v, "ts": m0 + i * 1_000} for i, v in enumerate(values))
    assert h.ingest(srv, body, "curl-h2c").status == 200
    srv.stop()  # SIGTERM: seals and writes every open minute
    assert srv.proc.returncode == 0
    assert int(mariadb.scalar("SELECT SUM(sample_count) FROM rtd_rollups", mysql_db)) == 120

    srv2 = start(server_factory, mariadb, mysql_db, name="warm-b")
    state = h.sse_rows(srv2, [sid], lambda s: len(h.rows_for(s, sid)) == 1)
    row = h.rows_for(state, sid)[0]
    assert row["count"] == 120 and (row["min5m"], row["max5m"]) == (1, 120), row


def test_database_stopped_mid_stream_loses_nothing_and_bounds_memory(server_factory, mariadb, mysql_db, ids):
    cap = 20_000
    srv = start(server_factory, mariadb, mysql_db, "--buffer-capacity", str(cap), "--max-batch", "5000")
    sid = f"{ids}-outage"
    feeder = Feeder(srv, sid)
    try:
        feeder.wait_ack_at_least(2_000)
        mariadb.pause()
        h.wait_until(lambda: srv.stats()["writer"]["write_failures_total"] > 0, timeout=30, what="store write failures")
        # Ingestion is pushed back (clients paused), not dropped, and the buffer stays within its bound.
        h.wait_until(lambda: srv.stats()["writer"]["backpressure_events_total"] > 0, timeout=30, what="backpressure")
        st = srv.stats()
        assert st["writer"]["buffered_samples"] <= cap
        assert st["memory"]["rss_bytes"] < 1_000_000_000
        status, _, body = h.http_get(srv.url("/health"))
        assert status == 503 and json.loads(body)["store"]["healthy"] is False
        # ...but it stays ready for the load balancer: it buffers and pushes back, and its agents
        # belong here (consistent hashing), so HAProxy keeps routing to it.
        status, _, body = h.http_get(srv.url("/ready"))
        assert status == 200 and json.loads(body)["status"] == "ready"
        sent_during_outage = feeder.sent
        mariadb.resume()
        feeder.wait_ack_at_least(sent_during_outage + 1_000, timeout=60)
        summary = feeder.finish()
    finally:
        feeder.close()
    assert summary["rejected"] == 0 and summary["acked_lines"] == feeder.sent == summary["lines"]
    assert series_count(mariadb, mysql_db, sid) == [feeder.sent, feeder.sent, 0, feeder.sent - 1]
    assert srv.stats()["store"]["healthy"]
    status, _, _ = h.http_get(srv.url("/health"))
    assert status == 200


def test_killed_writer_connections_lose_and_double_nothing(server_factory, mariadb, mysql_db, ids):
    srv = start(server_factory, mariadb, mysql_db, "--max-batch", "2000")
    sid = f"{ids}-kill"
    feeder = Feeder(srv, sid)
    kills = 0
    try:
        feeder.wait_ack_at_least(1_000)
        for _ in range(5):
            opened = srv.stats()["store"]["connections_opened"]
            ids_ = [r[0] for r in mariadb.sql(
                f"SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{mysql_db}' AND ID <> CONNECTION_ID()")]
            for cid in ids_:
                try:
                    mariadb.sql(f"KILL CONNECTION {cid}")
                    kills += 1
                except RuntimeError:
                    pass  # already gone
            # The writer notices on its next batch and reconnects.
            h.wait_until(lambda: srv.stats()["store"]["connections_opened"] > opened, timeout=30, what="reconnect")
        acked = feeder.wait_ack_at_least(feeder.sent - 400, timeout=60)
        assert acked > 1_000
        summary = feeder.finish()
    finally:
        feeder.close()
    assert kills >= 5
    assert summary["acked_lines"] == feeder.sent
    assert series_count(mariadb, mysql_db, sid) == [feeder.sent, feeder.sent, 0, feeder.sent - 1]
    assert srv.stats()["writer"]["write_failures_total"] >= 1


def test_sigterm_with_a_full_buffer_flushes_before_exit(server_factory, mariadb, mysql_db, ids):
    """The database blocks writes (a table lock) until the buffer is full and clients are paused;
    SIGTERM then drains HTTP, but the process stays up until every accepted sample is committed."""
    srv = start(server_factory, mariadb, mysql_db, "--buffer-capacity", "5000", "--max-batch", "1000", "--drain-timeout", "3")
    sid = f"{ids}-full"
    locker = subprocess.Popen(
        ["mariadb", "--no-defaults", "-h", mariadb.host, "-P", str(mariadb.port), "-u", mariadb.user, f"-p{mariadb.password}",
         "-N", "-B", "--unbuffered", mysql_db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = None
    try:
        locker.stdin.write(b"LOCK TABLES rtd_samples WRITE; SELECT 'locked';\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == b"locked"
        feeder = Feeder(srv, sid, chunk=500, pause=0.0)
        h.wait_until(lambda: srv.stats()["writer"]["parked_samples"] > 0, timeout=30, what="buffer full, client parked")
        st = srv.stats()
        assert st["writer"]["buffered_samples"] <= 5_000
        accepted = st["writer"]["buffered_samples"] + st["writer"]["parked_samples"]
        assert accepted >= 5_000
        srv.signal(signal.SIGTERM)
        h.wait_until(lambda: h.port_refuses(srv.port), timeout=10, what="listeners closed")
        # HTTP has drained (3 s); the process must still be waiting for the database.
        time.sleep(4)  # the drain timeout elapsing is the point of this check, not a synchronisation
        assert srv.alive(), "exited with accepted samples not yet committed"
        locker.stdin.write(b"UNLOCK TABLES; SELECT 'unlocked';\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == b"unlocked"
        assert srv.wait(timeout=60) == 0
    finally:
        if feeder:
            feeder.close()
        locker.kill()
        locker.wait()
    stored = series_count(mariadb, mysql_db, sid)
    assert stored[0] == stored[1], "no sample twice"
    assert stored[0] >= accepted, f"stored {stored[0]} < accepted {accepted}"
    assert stored[2] == 0 and stored[3] == stored[0] - 1, "a gapless prefix of the stream"


def test_server_waits_for_the_database_at_start(server_factory, mariadb, mysql_db, ids):
    mariadb.pause()
    resumer = threading.Timer(2.0, mariadb.resume)
    resumer.start()
    try:
        srv = start(server_factory, mariadb, mysql_db, "--store-connect-wait", "60")
    finally:
        resumer.join()
    assert h.ingest(srv, h.ndjson([{"server_id": f"{ids}-w", "metric_name": "m", "value": 1}]), "curl-h1").status == 200
    assert series_count(mariadb, mysql_db, f"{ids}-w")[0] == 1
    assert "not reachable yet" in srv.stderr_text()


class LoadInBackground:
    """metrics-loadgen on its own thread: `.report` after `.join()`."""

    def __init__(self, tmp_path, url: str, prefix: str, *args: str, timeout: float = 180):
        from test_loadgen import run_loadgen
        self.report: dict = {}

        def run():
            self.report, _ = run_loadgen(tmp_path, "--url", url, "--server-prefix", prefix, *args, timeout=timeout)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self, timeout: float = 200) -> dict:
        self.thread.join(timeout=timeout)
        return self.report


def stored_once(mariadb, db, prefix: str) -> tuple[int, int]:
    """Raw rows of servers with `prefix`, and distinct samples among them."""
    rows, distinct = (int(x) for x in mariadb.sql(
        "SELECT COUNT(*), COUNT(DISTINCT x.series_id, x.ts, x.value) FROM rtd_samples x JOIN rtd_series s ON s.id = x.series_id "
        f"WHERE s.server_id LIKE '{prefix}%'", db)[0])
    return rows, distinct


def test_sigkill_and_restart_loses_nothing_acknowledged_and_stores_resends_once(server_factory, mariadb, mysql_db, tmp_path):
    """Fault injection: SIGKILL under load (no drain, no flush), restart on the same port. The
    load generator reconnects and resends everything after its last ack; the store keeps every
    acknowledged sample exactly once, including resent lines the dead process had committed."""
    # Short timings, but a settle time above the aggregator's hold of a minute that stopped
    # receiving samples (5 s seal delay + a tick): a shorter one could repair a minute an instance
    # still holds open, as the settle documentation warns.
    fast_repair = ("--store-instance-timeout", "2", "--store-rollup-settle", "8", "--store-repair-interval", "1")
    first = start(server_factory, mariadb, mysql_db, *fast_repair, name="kill-a")
    port = first.port
    load = LoadInBackground(tmp_path, first.base, "kill-", "--agents", "50", "--connections", "5", "--rate", "400",
                            "--duration", "10", "--drain", "40", timeout=120)
    h.wait_until(lambda: first.stats()["store"].get("samples_inserted", 0) > 20_000, timeout=30, what="rows committed")
    first.kill()  # SIGKILL: whatever was accepted but not yet committed is gone with the process
    second = server_factory("--store", mariadb.url_for(mysql_db), *fast_repair, name="kill-b", port=port)
    report = load.join(timeout=150)
    assert report["reconnects"] >= 1 and report["unacked_lines_at_end"] == 0, report
    assert report["lines_acked"] == report["lines_sent"], report
    rows, distinct = stored_once(mariadb, mysql_db, "kill-")
    assert rows == distinct == report["samples_acked"], (rows, distinct, report["samples_acked"])
    ignored = second.stats()["store"]["duplicate_samples_ignored"]
    print(f"SIGKILL + restart: {report['samples_sent']} sent, {report['samples_acked']} acknowledged, {rows} stored once; "
          f"{report['lines_resent']} lines resent, {ignored} of them already stored")
    # Rollups: the dead instance never sealed its open minutes, and the resent samples were folded
    # again by the new one. The new instance finds the dead one's stale heartbeat and queues its
    # recent minutes, the resends queued theirs; once nothing holds those minutes open (a clean
    # stop seals everything), the repairs rebuild them from raw rows: rollups equal raw rows.
    h.wait_until(lambda: second.stats()["store"]["dead_instances_recovered"] >= 1, timeout=30, what="the dead instance found")
    second.stop()
    third = server_factory("--store", mariadb.url_for(mysql_db), *fast_repair, name="kill-c")
    # Whichever instance gets to a due request carries it out: the second may before it stops.
    h.wait_until(lambda: int(mariadb.scalar("SELECT COUNT(*) FROM rtd_rollup_repairs", mysql_db)) == 0,
                 timeout=120, what="repairs carried out")
    repaired = [line for srv in (second, third) for line in srv.stderr_text(tail=10_000).splitlines()
                if "rollups rebuilt from raw rows" in line]
    assert repaired, "no instance rebuilt any rollup"
    got, want = stored_rollups(mariadb, mysql_db, "kill-%"), naive_rollups(mariadb, mysql_db, "kill-%")
    assert sum(int(r[4]) for r in want) == rows
    assert same_rollups(got, want), [(g, w) for g, w in zip(got, want) if g != w][:5]
    print(f"rollup repair: {'; '.join(l.split('mysql-store: ', 1)[-1].split(' [', 1)[0] for l in repaired)}; rollups equal raw rows")


def test_database_down_for_30_seconds_under_load(server_factory, mariadb, mysql_db, tmp_path):
    """Fault injection: MariaDB stopped for 30 s while 50 agents stream. The server buffers to its
    bound, pushes back on the agents, reports 503 on /health (200 on /ready), keeps serving the
    dashboard, and once the database is back commits everything; every acknowledged sample is
    stored exactly once and memory stays bounded."""
    srv = start(server_factory, mariadb, mysql_db, "--buffer-capacity", "200000", name="outage30")
    load = LoadInBackground(tmp_path, srv.base, "out30-", "--agents", "50", "--connections", "5", "--rate", "200",
                            "--duration", "45", "--drain", "60")
    h.wait_until(lambda: srv.stats()["store"].get("samples_inserted", 0) > 10_000, timeout=30, what="rows committed")
    mariadb.pause()
    stopped_at = time.monotonic()
    peak_rss, peak_buffered = 0, 0
    saw_backpressure = False
    try:
        while time.monotonic() - stopped_at < 30:
            st = srv.stats()
            peak_rss = max(peak_rss, st["memory"]["rss_bytes"])
            peak_buffered = max(peak_buffered, st["writer"]["buffered_samples"])
            saw_backpressure = saw_backpressure or st["writer"]["backpressure_events_total"] > 0
            assert h.http_get(srv.url("/health"), timeout=5)[0] in (200, 503)
            assert h.http_get(srv.url("/ready"), timeout=5)[0] == 200
            assert h.http_get(srv.url("/api/catalog"), timeout=5)[0] == 200   # the dashboard side keeps working
            time.sleep(1)  # sampling interval of this observer, not synchronisation
        assert h.http_get(srv.url("/health"))[0] == 503
    finally:
        mariadb.resume()
    report = load.join()
    assert saw_backpressure and peak_buffered <= 200_000
    assert peak_rss < 1_000_000_000
    assert report["unacked_lines_at_end"] == 0 and report["lines_acked"] == report["lines_sent"], report
    rows, distinct = stored_once(mariadb, mysql_db, "out30-")
    assert rows == distinct == report["samples_acked"], (rows, distinct, report["samples_acked"])
    print(f"MariaDB down 30 s: {report['samples_sent']} sent, {report['samples_acked']} acknowledged, {rows} stored once; "
          f"peak buffered {peak_buffered}, peak RSS {peak_rss >> 20} MiB, throttled agent-ticks {report['throttled_agent_ticks']}")


def test_samples_refused_at_the_series_cap_are_not_stored(server_factory, mariadb, mysql_db, ids):
    """--max-series with the MySQL store: a refused line (too_many_series) leaves no series row and
    no raw row; the accepted lines beside it are committed as usual."""
    srv = start(server_factory, mariadb, mysql_db, "--max-series", "2")
    sid, ts = f"{ids}-cap", h.now_ms() - 2_000
    r = h.ingest(srv, h.ndjson([{"server_id": sid, "metric_name": m, "value": 1, "ts": ts} for m in ("a", "b")]), "curl-h2c")
    assert h.split_ingest_reply(r.ndjson())[2]["acked_samples"] == 2
    body = h.ndjson([{"server_id": sid, "metric_name": m, "value": v, "ts": ts + v}
                     for v, m in enumerate(["a", "c", "b", "d", "a"], start=1)])
    acks, errors, summary = h.split_ingest_reply(h.ingest(srv, body, "curl-h2c").ndjson())
    assert [(e["line"], e["code"]) for e in errors] == [(2, "too_many_series"), (4, "too_many_series")]
    assert summary["acked_samples"] == 3
    rows = mariadb.sql("SELECT s.metric_name, COUNT(*) FROM rtd_samples x JOIN rtd_series s ON s.id = x.series_id "
                       f"WHERE s.server_id = '{sid}' GROUP BY s.metric_name ORDER BY 1", mysql_db)
    assert rows == [["a", "3"], ["b", "2"]]
    assert int(mariadb.scalar(f"SELECT COUNT(*) FROM rtd_series WHERE server_id = '{sid}'", mysql_db)) == 2


def test_a_resend_folded_twice_is_repaired_from_raw_rows(server_factory, mariadb, mysql_db, ids):
    """An agent resends lines that were stored already (its instance died before acknowledging
    them): the raw rows stay single (INSERT IGNORE), but the aggregator folds the samples again and
    the minute rollups count them twice, until the batch's repair request (made in its transaction)
    rebuilds those minutes from the raw rows."""
    srv = start(server_factory, mariadb, mysql_db, "--store-rollup-settle", "2", "--store-repair-interval", "1",
                "--store-instance-timeout", "3")
    sid = f"{ids}-resend"
    rng = random.Random(11)
    m0 = h.now_ms() // 60_000 * 60_000 - 4 * 60_000
    body = h.ndjson({"server_id": sid, "metric_name": metric, "value": round(rng.uniform(0, 100), 2), "ts": m0 + rng.randrange(0, 180_000)}
                    for metric in ("cpu", "mem") for _ in range(300))
    assert h.split_ingest_reply(h.ingest(srv, body, "curl-h2c").ndjson())[2]["acked_samples"] == 600
    # Random minute order: each series' last late part is stored at the next wall-clock minute.
    h.wait_until(lambda: sum(int(r[4]) for r in stored_rollups(mariadb, mysql_db, sid)) == 600, timeout=90, what="rollups of 600 samples")
    assert same_rollups(stored_rollups(mariadb, mysql_db, sid), naive_rollups(mariadb, mysql_db, sid))
    # The resend: acknowledged again, stored once, folded twice.
    assert h.split_ingest_reply(h.ingest(srv, body, "curl-h2c").ndjson())[2]["acked_samples"] == 600
    assert srv.stats()["store"]["duplicate_samples_ignored"] >= 600
    assert int(mariadb.scalar(f"SELECT COUNT(*) FROM rtd_samples x JOIN rtd_series s ON s.id = x.series_id WHERE s.server_id = '{sid}'",
                              mysql_db)) == 600
    h.wait_until(lambda: srv.stats()["store"]["rollup_minutes_repaired"] >= 3
                 and same_rollups(stored_rollups(mariadb, mysql_db, sid), naive_rollups(mariadb, mysql_db, sid)),
                 timeout=90, what="the resent minutes rebuilt from raw rows")
    # The resent samples were late (their minutes stored): the aggregator held their second fold
    # back until the next wall-clock minute and the instance's watermark with it, so the repair
    # ran after that fold merged, not before (which would count them twice after all).
    h.wait_until(lambda: srv.stats()["store"]["rollups_merged"] > 0 and srv.stats()["series"]["rollups_held_from_minute"] is None, timeout=90, what="held rollups flushed")
    assert same_rollups(stored_rollups(mariadb, mysql_db, sid), naive_rollups(mariadb, mysql_db, sid))
    assert int(mariadb.scalar("SELECT COUNT(*) FROM rtd_rollup_repairs", mysql_db)) == 0


def _rollup(mariadb, db, sid) -> list:
    """(sample_count, value_sum) of server `sid`'s stored rollups, by minute."""
    return mariadb.sql("SELECT r.sample_count, r.value_sum FROM rtd_rollups r JOIN rtd_series s ON s.id = r.series_id "
                       f"WHERE s.server_id = '{sid}' ORDER BY r.minute", db)


def test_sums_beyond_the_largest_double_saturate_and_never_block_writes(server_factory, mariadb, mysql_db, ids):
    """Finite values of 1e308 add up past the largest double. The rollup's sum used to go to the
    database as infinity (refused: 'Out of range value', 1264) and a merge of two large sums
    overflowed in SQL (1690); either way the batch failed forever, every later batch waited behind
    it and SIGTERM hung. Sums now saturate at the largest double, in Swift and in the SQL merge."""
    ts = h.now_ms() - 1_000
    big, other = f"{ids}-big", f"{ids}-other"
    lines = [{"server_id": big, "metric_name": "m", "value": 1e308, "ts": ts},
             {"server_id": big, "metric_name": "m", "value": 1e308, "ts": ts + 1},
             {"server_id": other, "metric_name": "m", "value": 1.5, "ts": ts}]
    srv = start(server_factory, mariadb, mysql_db, name="ovf-a")
    assert h.ingest(srv, h.ndjson(lines)).status == 200
    srv.signal(signal.SIGTERM)  # seals the open minute: its rollup is written before exit
    assert srv.wait(timeout=60) == 0
    assert [[int(c), float(s)] for c, s in _rollup(mariadb, mysql_db, big)] == [[2, 1.7976931348623157e308]]
    # A second instance adds to the same minute: the stored sum and the new one merge in SQL.
    srv = start(server_factory, mariadb, mysql_db, name="ovf-b")
    assert h.ingest(srv, h.ndjson([{"server_id": big, "metric_name": "m", "value": 1e308, "ts": ts + 2},
                                   {"server_id": other, "metric_name": "m", "value": 2.5, "ts": ts + 2}])).status == 200
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=60) == 0
    assert [[int(c), float(s)] for c, s in _rollup(mariadb, mysql_db, big)] == [[3, 1.7976931348623157e308]]
    assert [[int(c), float(s)] for c, s in _rollup(mariadb, mysql_db, other)] == [[2, 4.0]]
    assert series_count(mariadb, mysql_db, big)[0] == 3


def test_prepared_statements_stay_bounded_with_varied_batch_sizes(server_factory, mariadb, mysql_db, ids):
    """Multi-row statements have one SQL text per row count; each connection kept every one it
    ever prepared, and `max_prepared_stmt_count` (16,382) is shared by every instance on the
    database. 200 batches of 1...200 rows used to leave 150+ statements prepared on the writer's
    connection; the cache now keeps at most 64 per connection."""
    srv = start(server_factory, mariadb, mysql_db, "--store-bulk", "multirow", name="stmts")
    sid = f"{ids}-stmts"
    ts = h.now_ms() - 5_000
    before = int(mariadb.sql("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1])
    n = 0
    for size in range(1, 201):
        body = h.ndjson({"server_id": sid, "metric_name": "m", "value": n + k, "ts": ts + n + k} for k in range(size))
        assert h.ingest(srv, body).status == 200
        n += size
    prepared = int(mariadb.sql("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1]) - before
    assert prepared <= 100, f"{prepared} statements prepared"
    assert series_count(mariadb, mysql_db, sid)[0] == n


def test_a_line_rejected_before_and_after_a_reconnect_counts_once_in_the_load_report(server_factory, mariadb, mysql_db, tmp_path):
    """The load generator counts a rejected line once an ack covers it. Here half the lines carry
    an invalid metric name (rejected as they are parsed, their `error` lines sent at once) and the
    database is stopped, so no ack comes: the server is killed, the lines are resent to a new
    process and rejected again. NDJSON has one sample per line, so rejected lines must equal
    rejected samples (before the fix the lines were counted twice)."""
    first = start(server_factory, mariadb, mysql_db, name="rej-a")
    port = first.port
    # 5 bad lines/s per agent: every request stays within the 100 rejections the server details.
    load = LoadInBackground(tmp_path, first.base, "rej-", "--agents", "4", "--connections", "2", "--rate", "10",
                            "--metrics", "cpu_usage,bad@name", "--duration", "12", "--drain", "40", timeout=120)
    h.wait_until(lambda: first.stats()["ingest"]["rejected_lines_total"] >= 8, timeout=30, what="rejections")
    mariadb.pause()
    try:
        seen = first.stats()["ingest"]["rejected_lines_total"]
        h.wait_until(lambda: first.stats()["ingest"]["rejected_lines_total"] >= seen + 20, timeout=30,
                     what="lines rejected while nothing is acknowledged")
        first.kill()
    finally:
        mariadb.resume()
    server_factory("--store", mariadb.url_for(mysql_db), name="rej-b", port=port)
    report = load.join(timeout=150)
    assert report["reconnects"] >= 1 and report["unacked_lines_at_end"] == 0, report
    assert report["samples_rejected"] > 0, report
    assert report["lines_rejected"] == report["samples_rejected"], report
    assert sum(report["rejected_by_code"].values()) == report["lines_rejected"], report
    assert report["samples_acked"] + report["samples_rejected"] == report["samples_sent"], report
