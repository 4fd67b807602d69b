#!/usr/bin/env python3
"""Tiny NDJSON POSTs over h2c (or TLS h2 with --tls) (h2load -c 10 -m 100, 10-line bodies), ours vs nghttpd serving the
same request shape, alternating rounds in one run; prints req/s, server CPU per request and the ratio.

    python3 scripts/bench/tiny_posts.py [--seconds 5] [--rounds 3]
"""
import argparse, os, subprocess, tempfile, time
from common import *

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=int, default=5)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--tls", action="store_true", help="TLS (ALPN h2) for both servers instead of h2c")
a = ap.parse_args()
build_release()
tmp = tempfile.mkdtemp()
body = os.path.join(tmp, "small.ndjson")
with open(body, "w") as f:
    for i in range(10):
        f.write('{"server_id":"web-%02d","metric_name":"cpu_usage","value":%.1f}\n' % (i, i * 1.5))
os.makedirs(os.path.join(tmp, "www/api/metrics"))
with open(os.path.join(tmp, "www/api/metrics/stream"), "w") as f:
    f.write('{"summary":{"lines":10}}\n')
srv, port, tlsport = start_server(*(["--tls-self-signed"] if a.tls else []))
scheme = "https" if a.tls else "http"
statsport = port
if a.tls:
    port = tlsport
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert], check=True, capture_output=True)
import socket
# nghttpd needs a concrete port: take a free one.
s = socket.socket(); s.bind(("127.0.0.1", 0)); ngport = s.getsockname()[1]; s.close()
ngargs = ["-d", os.path.join(tmp, "www"), str(ngport)] + ([key, cert] if a.tls else [])
ng = subprocess.Popen(["nghttpd"] + ([] if a.tls else ["--no-tls"]) + ngargs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
ours, theirs, cpu = [], [], []
try:
    for r in range(a.rounds):
        res = h2load(["-D", str(a.seconds), "-c", "10", "-m", "100", "-d", body, f"{scheme}://127.0.0.1:{ngport}/api/metrics/stream"])
        theirs.append(res["req_s"])
        c0 = cpu_seconds(srv.pid)
        res = h2load(["-D", str(a.seconds), "-c", "10", "-m", "100", "-d", body, f"{scheme}://127.0.0.1:{port}/api/metrics/stream"])
        c1 = cpu_seconds(srv.pid)
        assert res["failed"] == 0, res["raw"]
        ours.append(res["req_s"])
        cpu.append((c1 - c0) / max(1, res["succeeded"]) * 1e6)
        print(f"round {r + 1}: nghttpd {theirs[-1]:,.0f} req/s | ours {ours[-1]:,.0f} req/s, {cpu[-1]:.1f} us server CPU/request, ratio {ours[-1] / theirs[-1]:.2f}")
    st = stats(statsport)
    print(f"best: ours {max(ours):,.0f} req/s ({max(ours) * 10:,.0f} samples/s), nghttpd {max(theirs):,.0f} req/s, "
          f"ratio of bests {max(ours) / max(theirs):.2f}, mean ratio {sum(o / t for o, t in zip(ours, theirs)) / len(ours):.2f}; "
          f"server RSS {rss_bytes(srv.pid) / 2**20:.0f} MiB; samples ingested {st['ingest']['samples_total']:,}")
finally:
    ng.kill()
    stop(srv)
