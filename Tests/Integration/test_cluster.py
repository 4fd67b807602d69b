"""Three instances behind HAProxy (deploy/haproxy/haproxy.cfg) on one MariaDB: routing by server id
with consistent hashing, failover when an instance dies, and rebalancing when it comes back,
driven by metrics-loadgen through the proxy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rtd_helpers as h
from test_loadgen import run_loadgen

sys.path.insert(0, str(h.REPO / "scripts" / "lib"))
import haproxy_config  # noqa: E402  (the same rendering scripts/cluster.sh uses)

pytestmark = pytest.mark.own_server


class HAProxy:
    """HAProxy in the foreground with the shipped config, one `server` line per instance."""

    def __init__(self, workdir: Path, backends: list[int]):
        if shutil.which("haproxy") is None:
            pytest.fail("haproxy is not installed (scripts/test.sh installs it)")
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config.render([f"{h.HOST}:{p}" for p in backends]))
        pem = workdir / "haproxy.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", str(workdir / "key.pem"), "-out", str(workdir / "cert.pem")],
                       check=True, capture_output=True)
        pem.write_text((workdir / "cert.pem").read_text() + (workdir / "key.pem").read_text())
        self.port, self.tls_port, self.stats_port = h.free_port(), h.free_port(), h.free_port()
        env = dict(os.environ, RTD_HAPROXY_BIND=f"{h.HOST}:{self.port}", RTD_HAPROXY_TLS_BIND=f"{h.HOST}:{self.tls_port}",
                   RTD_HAPROXY_STATS=f"{h.HOST}:{self.stats_port}", RTD_HAPROXY_CERT=str(pem))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.log = open(workdir / "haproxy.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            h.wait_until(lambda: (st := self.status("ingest")) and all(s == "UP" for s in st.values()), timeout=20,
                         what="HAProxy backends UP")
        except BaseException:
            self.stop()  # never leave a proxy behind
            raise

    @property
    def base(self) -> str:
        return f"http://{h.HOST}:{self.port}"

    def status(self, backend: str) -> dict:
        """Server name -> status (UP, DOWN, ...) of one backend, from the stats page (CSV)."""
        try:
            _, _, body = h.http_get(f"http://{h.HOST}:{self.stats_port}/;csv")
        except OSError:
            return {}  # still starting
        out = {}
        for line in body.decode().splitlines()[1:]:
            f = line.split(",")
            if len(f) > 17 and f[0] == backend and f[1] not in ("FRONTEND", "BACKEND"):
                out[f[1]] = f[17]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def cluster(server_factory, mariadb, mysql_db, tmp_path):
    url = mariadb.url_for(mysql_db)
    ports = [h.free_port() for _ in range(3)]
    peers = [",".join(f"http://{h.HOST}:{p}" for p in ports if p != mine) for mine in ports]
    instances = [server_factory("--store", url, "--peers", peers[i], name=f"node{i + 1}", tick_ms=250, port=ports[i])
                 for i in range(3)]
    proxy = HAProxy(tmp_path, [s.port for s in instances])
    yield {"instances": instances, "proxy": proxy, "db": mysql_db, "mariadb": mariadb, "url": url, "factory": server_factory,
           "peers": peers}
    proxy.stop()


def servers_on(instance: h.ServerProcess, metric: str = "cpu_usage", origin: str = "local") -> set[str]:
    """The server ids whose `metric` series an instance shows: its own agents' (`origin=local`),
    or the whole fleet it merged from its peers (`origin=any`)."""
    with h.SSEClient(instance, f"metrics={metric}&fleet=0&limit=100000&origin={origin}") as sse:
        ev = sse.next_event(10)
        return {r["server_id"] for r in ev.rows}


def stored(cluster) -> tuple[int, int]:
    """Raw rows in MariaDB, and distinct (series, timestamp) pairs among them."""
    row = cluster["mariadb"].sql("SELECT COUNT(*), COUNT(DISTINCT series_id, ts) FROM rtd_samples", db=cluster["db"])[0]
    return int(row[0]), int(row[1])


def test_every_agent_lands_on_exactly_one_instance(cluster, tmp_path):
    proxy, instances = cluster["proxy"], cluster["instances"]
    report, _ = run_loadgen(tmp_path, "--url", proxy.base, "--agents", "300", "--connections", "3", "--rate", "10",
                            "--duration", "4", "--server-prefix", "fleet-", "--viewers", "3",
                            "--viewer-query", "metrics=cpu_usage&server_prefix=fleet-&fleet=0")
    assert report["samples_acked"] == report["samples_sent"] and report["stream_errors"] == 0, report
    per = [servers_on(s) for s in instances]
    everyone = {f"fleet-{i:05d}" for i in range(1, 301)}
    assert set().union(*per) == everyone
    assert sum(len(p) for p in per) == 300, [len(p) for p in per]          # disjoint: each series on one instance
    assert all(60 <= len(p) <= 140 for p in per), [len(p) for p in per]    # and the hash spreads them
    # The fleet view from any instance shows every server: its own plus what it merged from its peers.
    for s in instances:
        h.wait_until(lambda: servers_on(s, origin="any") == everyone, timeout=10, what=f"the whole fleet on {s.name}")
        views = s.stats()["sse"]
        assert views["peer_series"] >= 5 * (300 - len(servers_on(s)))
    # Viewers (through the proxy, on any instance) saw rows of every agent, merged ones included.
    assert report["freshness"]["count"] > 0
    print(f"freshness through the merge (viewers via HAProxy): {report['freshness']}")
    # What was acknowledged through the proxy is in MariaDB once.
    rows, distinct = stored(cluster)
    assert rows == distinct == report["samples_acked"]


def test_instance_loss_reroutes_agents_and_keeps_acknowledged_data(cluster, tmp_path):
    proxy, instances = cluster["proxy"], cluster["instances"]
    result: dict = {}

    def run():
        result["report"], result["text"] = run_loadgen(tmp_path, "--url", proxy.base, "--agents", "300", "--connections", "3",
                                                       "--rate", "20", "--duration", "10", "--drain", "30",
                                                       "--server-prefix", "fo-")

    t = threading.Thread(target=run)
    t.start()
    victim = instances[1]
    h.wait_until(lambda: victim.stats()["ingest"]["samples_total"] > 2_000, timeout=20, what="load on the victim")
    # Its agents' series (read twice, a moment apart, so every agent's first cpu sample is in).
    victim_servers = h.wait_until(lambda: (a := servers_on(victim)) and time.sleep(0.5) is None and a == servers_on(victim) and a,
                                  timeout=10, what="the victim's agents")
    killed_at = time.monotonic()
    victim.kill()
    h.wait_until(lambda: proxy.status("ingest").get("rtd2") not in (None, "UP"), timeout=10, what="HAProxy marks rtd2 down")
    marked_down = time.monotonic() - killed_at
    # The dashboard keeps being served through the proxy meanwhile.
    status, _, _ = h.http_get(proxy.base + "/health")
    assert status == 200
    # The victim's agents come back on the survivors within seconds.
    survivors = [instances[0], instances[2]]
    h.wait_until(lambda: victim_servers <= servers_on(survivors[0]) | servers_on(survivors[1]), timeout=15,
                 what="the victim's agents re-routed")
    rerouted = time.monotonic() - killed_at
    t.join(timeout=120)
    report = result["report"]
    assert report["unacked_lines_at_end"] == 0 and report["lines_acked"] == report["lines_sent"], report
    # Every acknowledged sample is in MariaDB exactly once: resent lines the dead instance had
    # committed without acknowledging them are recognised by (series, timestamp) and not stored twice.
    rows, distinct = stored(cluster)
    assert rows == distinct == report["samples_acked"], (rows, distinct, report)
    ignored = sum(s.stats()["store"]["duplicate_samples_ignored"] for s in survivors)
    assert ignored <= report["lines_resent"], (ignored, report["lines_resent"])
    print(f"marked down after {marked_down:.1f} s, agents re-routed after {rerouted:.1f} s, "
          f"{report['lines_resent']} lines resent, {ignored} of them already stored (ignored)")

    # Bring it back: new streams hash to it again, nothing acknowledged is lost.
    back = cluster["factory"]("--store", cluster["url"], "--peers", cluster["peers"][1], name="node2-back", tick_ms=250,
                              port=victim.port)
    h.wait_until(lambda: proxy.status("ingest").get("rtd2") == "UP", timeout=15, what="HAProxy marks rtd2 up")
    report2, _ = run_loadgen(tmp_path, "--url", proxy.base, "--agents", "300", "--connections", "3", "--rate", "10",
                             "--duration", "3", "--server-prefix", "fo-")
    assert report2["unacked_lines_at_end"] == 0
    assert servers_on(back) == victim_servers, "consistent hashing sends the same agents back"
    rows2, distinct2 = stored(cluster)
    assert distinct2 == distinct + report2["samples_acked"]
