"""A short, bounded run of scripts/fuzz/h2_frames.py (random and mutated HTTP/2 frames over h2c)
against a dedicated server: it must stay healthy, leave no connection or ingest stream open, and
keep serving real requests. The long run is the script itself (see Docs/benchmarks.md)."""

import os
import subprocess
import sys

import rtd_helpers as h

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_random_h2_frames_do_not_hurt_the_server(server_factory):
    srv = server_factory(name="fuzz")
    for seed in (11, 12):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "fuzz", "h2_frames.py"), "--port", str(srv.port),
                            "--seconds", "4", "--seed", str(seed)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "server healthy" in r.stdout
    # Everything the fuzzer opened is closed again, and real traffic still works.
    stats = h.wait_until(lambda: (lambda s: s if s["connections"]["http2"] == 0 and s["ingest"]["open_streams"] == 0 else None)(
        srv.stats()), timeout=10, what="fuzz connections to close")
    assert stats["connections"]["http2"] == 0
    resp = h.ingest(srv, h.ndjson([{"server_id": "after-fuzz", "metric_name": "m", "value": 1}]), client="curl-h2c")
    assert resp.status == 200
