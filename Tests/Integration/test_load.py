"""h2load against the ingest route: many concurrent streams on few connections (h2c, and TLS h2)."""

from __future__ import annotations

import re
import subprocess

import pytest

import rtd_helpers as h


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_h2load_ingest(server, ids, tmp_path, tls):
    n_requests, lines_per_request = (500 if tls else 2000), 10
    sids = [f"{ids}-h2l-{i}" for i in range(lines_per_request)]
    body = h.ndjson({"server_id": sids[i], "metric_name": "rps", "value": i} for i in range(lines_per_request))
    data = tmp_path / "body.ndjson"
    data.write_bytes(body)

    before = server.stats()["ingest"]["samples_total"]
    p = subprocess.run(["h2load", "-n", str(n_requests), "-c", "4", "-m", "20", "-d", str(data),
                        "-H", "content-type: application/x-ndjson", server.url("/api/metrics/stream", tls=tls)],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert re.search(rf"\b{n_requests} succeeded, 0 failed, 0 errored, 0 timeout", out), out
    assert re.search(rf"status codes: {n_requests} 2xx, 0 3xx, 0 4xx, 0 5xx", out), out
    assert f"Application protocol: {'h2' if tls else 'h2c'}\n" in out, out

    expected = n_requests * lines_per_request
    total = h.wait_until(lambda: (t := server.stats()["ingest"]["samples_total"]) >= before + expected and t,
                         what=f"samples_total to grow by {expected}")
    assert total == before + expected

    # Every request's lines are durable: each series holds one sample per request.
    state = h.sse_rows(server, sids, lambda s: len(s) == lines_per_request and
                       all(r["count"] == n_requests for r in s.values()), timeout=15)
    assert sorted(r["last"] for r in state.values()) == list(range(lines_per_request))
