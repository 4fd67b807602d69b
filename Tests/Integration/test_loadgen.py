"""metrics-loadgen against the real server: agents over h2c and TLS, acks, SSE viewers, the JSON
report, and reconnect-with-resend across a server restart."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import rtd_helpers as h

LOADGEN = os.environ.get("RTD_LOADGEN_BIN", str(h.REPO / ".build" / "debug" / "metrics-loadgen"))

pytestmark = pytest.mark.own_server


def run_loadgen(tmp_path: Path, *args: str, timeout: float = 90) -> tuple[dict, str]:
    if not os.access(LOADGEN, os.X_OK):
        pytest.fail(f"load generator not built: {LOADGEN} (swift build)")
    out = tmp_path / f"report-{time.monotonic_ns()}.json"
    p = subprocess.run([LOADGEN, *args, "--json", str(out)], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return json.loads(out.read_text()), p.stdout + p.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_agents_viewers_and_report(server_factory, tmp_path, tls):
    srv = server_factory(name="lg", tick_ms=250)
    url = srv.tls_base if tls else srv.base
    prefix = h.uid("lg") + "-"
    report, text = run_loadgen(tmp_path, "--url", url, "--insecure", "--agents", "12", "--connections", "3", "--rate", "200",
                               "--duration", "3", "--viewers", "2", "--server-prefix", prefix,
                               "--viewer-query", f"server_prefix={prefix}&metrics=cpu_usage")
    assert report["agents"] == 12 and report["connections"] == 3
    assert report["samples_sent"] > 12 * 200 * 2, report
    assert report["samples_acked"] == report["samples_sent"] and report["unacked_lines_at_end"] == 0, report
    assert report["lines_rejected"] == 0 and report["stream_errors"] == 0, report
    assert report["ack_latency"]["count"] == report["lines_acked"]
    assert report["ack_latency"]["p99_ms"] < 5_000
    # Viewers saw updates with rows of these agents, and measured their freshness.
    assert report["sse_updates"] >= 4 and report["freshness"]["count"] > 0, report
    assert 0 <= report["freshness"]["p50_ms"] < 5_000
    assert "acknowledged" in text and "freshness" in text
    # The server holds what the report says was acknowledged.
    rows = h.sse_rows(srv, [f"{prefix}{i:05d}" for i in range(1, 13)], lambda s: len(s) == 12 * 5)
    assert sum(r["count"] for r in rows.values()) == report["samples_acked"]
    assert srv.stats()["ingest"]["samples_total"] == report["samples_acked"]


def test_line_protocol_with_labels(server_factory, tmp_path):
    srv = server_factory(name="lg-lp", tick_ms=250)
    prefix = h.uid("lp") + "-"
    report, _ = run_loadgen(tmp_path, "--url", srv.base, "--agents", "4", "--rate", "100", "--duration", "2", "--format", "influx",
                            "--label-values", "3", "--metrics", "cpu_usage,mem_used", "--server-prefix", prefix)
    assert report["samples_acked"] == report["samples_sent"] > 0 and report["lines_rejected"] == 0, report
    cat = {m["metric_name"]: m for m in srv.get_json("/api/catalog")["metrics"]}
    # One line protocol line carries both fields: system_cpu_usage and system_mem_used, 3 label values per agent.
    assert cat["system_cpu_usage"]["series"] == 4 * 3 and cat["system_mem_used"]["servers"] == 4


def test_rejected_samples_are_not_counted_as_acknowledged(server_factory, tmp_path):
    """An ack covers durable *and* rejected lines: samples refused at the series cap are reported
    as rejected, and what the report calls acknowledged is what the server stored."""
    srv = server_factory("--max-series", "10", name="lg-cap", tick_ms=250)
    prefix = h.uid("cap") + "-"
    report, text = run_loadgen(tmp_path, "--url", srv.base, "--agents", "4", "--rate", "50", "--duration", "2",
                               "--server-prefix", prefix)
    assert report["samples_rejected"] > 0 and report["lines_rejected"] > 0, report
    assert report["samples_acked"] + report["samples_rejected"] == report["samples_sent"], report
    assert report["unacked_lines_at_end"] == 0, report
    h.wait_until(lambda: srv.stats()["writer"]["samples_written_total"] == report["samples_acked"],
                 what="the server stored exactly what the report acknowledged")
    assert "rejected" in text


def test_viewers_refused_by_the_server_retry_without_crashing(server_factory, tmp_path):
    """A viewer's stream answered 400 ends while its connection stays up; the viewer closes the
    connection to retry. Over h2c that close ran inside nghttp2's receive call and freed the
    session under it."""
    srv = server_factory(name="lg-v400", tick_ms=250)
    report, _ = run_loadgen(tmp_path, "--url", srv.base, "--agents", "1", "--rate", "10", "--duration", "2",
                            "--viewers", "3", "--viewer-query", "top=abc", "--server-prefix", h.uid("v400") + "-")
    assert report["sse_updates"] == 0 and report["samples_acked"] == report["samples_sent"] > 0, report
    assert srv.proc.poll() is None


def test_reconnects_and_resends_across_a_server_restart(server_factory, tmp_path):
    first = server_factory(name="lg-a", tick_ms=250)
    port = first.port
    result: dict = {}

    def run():
        result["report"], result["text"] = run_loadgen(tmp_path, "--url", first.base, "--agents", "10", "--connections", "2",
                                                       "--rate", "400", "--duration", "9", "--drain", "20")

    t = threading.Thread(target=run)
    t.start()
    h.wait_until(lambda: first.stats()["ingest"]["samples_total"] > 2000, timeout=20, what="load arriving")
    first.kill()
    time.sleep(1.5)
    second = server_factory(name="lg-b", tick_ms=250, port=port)
    t.join(timeout=120)
    report = result["report"]
    assert report["reconnects"] >= 1, report
    assert report["unacked_lines_at_end"] == 0 and report["lines_acked"] == report["lines_sent"], report
    # After the restart the new process received the rest, the resent lines included.
    assert second.stats()["ingest"]["samples_total"] > 0
    assert "reconnects" in result["text"]
