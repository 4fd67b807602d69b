"""Authentication against the real server: ingest and view credentials from a file, per-agent
server-id restrictions, 401/403 without saying which part was wrong, open checks, HSTS on TLS,
TLS 1.2+ only, and a refusal to start without credentials unless development mode is explicit."""
import base64
import json
import subprocess

import pytest

import rtd_helpers as h

WEB = "web-agents-secret-0123456789"
ANY = "fleet-agents-secret-0123456789"
ALICE = "alice-view-secret-0123456789"


@pytest.fixture()
def secured(server_factory, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(f"""# test credentials
ingest web-agents {WEB} web-*
ingest fleet      {ANY}
view   alice      {ALICE}
""")
    creds.chmod(0o600)
    return server_factory("--auth-file", str(creds), name="auth")


def bearer(secret: str) -> dict:
    return {"authorization": f"Bearer {secret}"}


def basic(user: str, secret: str) -> dict:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_checks_stay_open_and_everything_else_needs_a_credential(secured):
    for path in ("/health", "/ready"):
        assert h.http_get(secured.url(path))[0] == 200
    assert h.http_get(secured.url("/ping"))[0] == 204
    for path in ("/", "/api/stats", "/api/catalog", "/metrics", "/api/history?server_id=a&metric_name=b", "/app.js"):
        status, headers, body = h.http_get(secured.url(path))
        assert status == 401, (path, status)
        assert headers["www-authenticate"].startswith("Basic realm="), path
        assert json.loads(body) == {"error": "authentication required"}
    r = h.curl(secured, "/api/metrics/stream", proto="h2c", method="POST", data=b'{"server_id":"web-1","metric_name":"m","value":1}\n')
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Bearer realm=")
    # A wrong secret, a wrong name with the right secret, and the other role's secret.
    assert h.http_get(secured.url("/api/stats"), headers=basic("alice", "x" * 28))[0] == 401
    status, _, body = h.http_get(secured.url("/api/stats"), headers=basic("mallory", ALICE))
    assert status == 401 and json.loads(body) == {"error": "invalid credentials"}
    assert h.http_get(secured.url("/api/stats"), headers=bearer(ANY))[0] == 403
    r = h.curl(secured, "/api/metrics", proto="h2c", method="POST", data=b"{}\n", headers=bearer(ALICE))
    assert r.status == 403
    # Counted by reason.
    rejected = json.loads(h.http_get(secured.url("/api/stats"), headers=bearer(ALICE))[2])["auth"]
    assert rejected["enabled"] is True
    assert rejected["rejected"]["missing"] >= 7 and rejected["rejected"]["invalid"] >= 2 and rejected["rejected"]["forbidden"] >= 2
    metrics = h.http_get(secured.url("/metrics"), headers=basic("alice", ALICE))[2].decode()
    assert 'rtd_auth_rejected_requests_total{reason="missing"}' in metrics


def test_a_restricted_agent_token_writes_only_its_servers_and_keeps_the_rest(secured, ids):
    lines = [{"server_id": f"web-{ids}", "metric_name": "cpu", "value": 1},
             {"server_id": f"db-{ids}", "metric_name": "cpu", "value": 2},     # not web-*: rejected
             {"server_id": f"web-{ids}-b", "metric_name": "cpu", "value": 3}]
    stream = h.StreamingIngest(secured, proto="h2c", headers=bearer(WEB))
    try:
        stream.send(h.ndjson(lines))
        stream.finish_request()
        replies = stream.read_to_eof()
    finally:
        stream.close()
    acks, errors, summary = h.split_ingest_reply(replies)
    assert [e["line"] for e in errors] == [2] and errors[0]["code"] == "server_not_allowed"
    assert f"db-{ids}" in errors[0]["reason"]
    assert summary["acked_lines"] == 3 and summary["samples"] == 2 and summary["rejected"] == 1
    # Line protocol through /write with the Influx v1 u/p parameters (what Telegraf's username/password send).
    lp = f"cpu,host=web-{ids}-lp v=1 {h.now_ms()}\ncpu,host=mail-{ids} v=2 {h.now_ms()}\n".encode()
    r = h.curl(secured, f"/write?precision=ms&u=web-agents&p={WEB}", proto="h1", data=lp)
    assert r.status == 400 and "server_not_allowed" in r.json()["error"], r.body
    # The unrestricted token writes anything; the view secret reads it back over SSE (Basic).
    assert h.ingest(secured, h.ndjson([{"server_id": f"db-{ids}", "metric_name": "cpu", "value": 5}]), "curl-h2c",
                    headers=bearer(ANY)).status == 200
    sse = h.SSEClient(secured, query=f"server_prefix=db-{ids}&metrics=cpu", headers=basic("alice", ALICE))
    try:
        assert sse.status == 200
        h.wait_until(lambda: sse.next_event(timeout=5) and any(k[0] == f"db-{ids}" for k in sse.state),
                     timeout=15, what="the row in the SSE stream")
    finally:
        sse.close()
    catalog = json.loads(h.http_get(secured.url(f"/api/catalog?access_token={ALICE}"))[2])
    assert any(m["metric_name"] == "cpu" for m in catalog["metrics"])


def test_tls_carries_hsts_and_refuses_tls_1_1(secured):
    r = h.curl(secured, "/ready", proto="h2-tls")
    assert r.status == 200 and r.headers["strict-transport-security"] == "max-age=31536000"
    r = h.curl(secured, "/ready", proto="h1-tls")
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert "strict-transport-security" not in h.curl(secured, "/ready", proto="h2c").headers
    old = subprocess.run(["curl", "-sk", "--tlsv1.1", "--tls-max", "1.1", "-o", "/dev/null", secured.url("/ready", tls=True)],
                         capture_output=True, timeout=20)
    assert old.returncode != 0, "a TLS 1.1 handshake must fail"


def test_no_credentials_and_no_dev_flag_refuses_to_start(tmp_path):
    p = subprocess.run([h.SERVER_BIN, "--port", "0", "--tls-port", "0"], capture_output=True, timeout=60, text=True)
    assert p.returncode != 0
    assert "no credentials" in p.stderr and "--no-auth" in p.stderr
    bad = tmp_path / "bad"
    bad.write_text("view alice short\n")
    p = subprocess.run([h.SERVER_BIN, "--port", "0", "--tls-port", "0", "--auth-file", str(bad)], capture_output=True, timeout=60, text=True)
    assert p.returncode != 0 and "line 1: the secret of 'alice' is shorter than 16 characters" in p.stderr


def test_development_mode_is_loud(server):
    # The suite's shared server runs with --no-auth.
    assert "AUTHENTICATION IS OFF" in server.stderr_text(tail=1000)
    assert server.stats()["auth"]["enabled"] is False
