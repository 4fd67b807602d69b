"""GET /api/dashboard/stream: init snapshot, per-tick deltas, filters, top-N, Last-Event-ID resume.

Every test runs over HTTP/1.1 and h2c (curl)."""

from __future__ import annotations

import re

import pytest

import rtd_helpers as h

PROTOS = ["h1", "h2c"]
ID_RE = re.compile(r"^[0-9a-f]+-\d+$")


def keys(ev: h.SSEEvent) -> list[tuple]:
    return [h.row_key(r) for r in ev.rows]


@pytest.fixture(scope="module")
def dataset(server):
    """Five series on three servers, published (visible to a dashboard) before the tests run."""
    p = h.uid("f")
    d = {
        "p": p,
        "web1": f"{p}-web-1", "web2": f"{p}-web-2", "db1": f"{p}-db-1",
        "load": f"{p}_load", "mem": f"{p}_mem",
    }
    ts = h.now_ms()
    rows = [
        (d["web1"], d["load"], 10), (d["web2"], d["load"], 30), (d["db1"], d["load"], 20),
        (d["web1"], d["mem"], 1), (d["db1"], d["mem"], 2),
    ]
    body = h.ndjson({"server_id": s, "metric_name": m, "value": v, "ts": ts} for s, m, v in rows)
    resp = h.ingest(server, body, "curl-h2c")
    assert h.split_ingest_reply(resp.ndjson())[2]["acked_samples"] == 5
    h.sse_rows(server, [d["web1"], d["web2"], d["db1"]], lambda s: len(s) == 5)
    return d


def _init(server, query: str, proto: str) -> h.SSEEvent:
    with h.SSEClient(server, query, proto=proto) as sse:
        assert sse.status == 200, sse.status_line
        ev = sse.next_event(10)
        assert ev.event == "init", ev
        return ev


@pytest.mark.parametrize("proto", PROTOS)
def test_init_then_update_with_only_changed_rows(server, ids, proto):
    a, b = f"{ids}-a", f"{ids}-b"
    h.ingest(server, h.ndjson([{"server_id": a, "metric_name": "m", "value": 1},
                               {"server_id": b, "metric_name": "m", "value": 2}]), "curl-h1")
    with h.SSEClient(server, f"servers={a},{b}", proto=proto) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in sse.headers.get("cache-control", "")
        first = sse.next_event()
        assert first.event == "init" and first.retry == 2000
        assert ID_RE.match(first.id), first.id
        d = first.data
        assert d["type"] == "init" and d["seq"] == first.seq and d["tick_ms"] == h.TICK_MS
        assert isinstance(d["timestamp"], int) and isinstance(d["fleet"], list)
        sse.wait_state(lambda s: len(s) == 2, what="both rows")

        h.ingest(server, h.ndjson([{"server_id": a, "metric_name": "m", "value": 5}]), "curl-h1")
        upd = sse.wait_event(lambda e: any(r["server_id"] == a and r["last"] == 5 for r in e.rows), what="update for a")
        assert upd.event == "update" and upd.data["type"] == "update"
        assert keys(upd) == [(a, "m", "")], "an update carries only the rows that changed"
        assert upd.rows[0]["seq"] == upd.seq == upd.data["seq"]
        assert upd.rows[0]["count"] == 2

        # Quiet ticks still produce (empty) updates; ids keep the epoch and increase.
        quiet = sse.next_event()
        assert quiet.event == "update" and quiet.rows == []
        evs = sse.events
        assert len({e.epoch for e in evs}) == 1
        assert all(x.seq < y.seq for x, y in zip(evs, evs[1:]))
        assert all(e.retry is None for e in evs[1:])
        assert all(r["server_id"] in (a, b) for e in evs for r in e.rows)


@pytest.mark.parametrize("proto", PROTOS)
def test_filters(server, dataset, proto):
    d = dataset
    cases = [
        (f"servers={d['web1']},{d['db1']}",
         {(d["web1"], d["load"]), (d["web1"], d["mem"]), (d["db1"], d["load"]), (d["db1"], d["mem"])}),
        (f"metrics={d['mem']}", {(d["web1"], d["mem"]), (d["db1"], d["mem"])}),
        (f"server_prefix={d['p']}-web-", {(d["web1"], d["load"]), (d["web2"], d["load"]), (d["web1"], d["mem"])}),
        (f"metrics={d['load']}&server_prefix={d['p']}-web-", {(d["web1"], d["load"]), (d["web2"], d["load"])}),
        (f"metrics={d['load']},{d['mem']}&servers={d['db1']}", {(d["db1"], d["load"]), (d["db1"], d["mem"])}),
        (f"metric={d['mem']}&server={d['web1']}", {(d["web1"], d["mem"])}),
    ]
    for query, want in cases:
        ev = _init(server, query, proto)
        got = {(r["server_id"], r["metric_name"]) for r in ev.rows}
        assert got == want, query


@pytest.mark.parametrize("proto", PROTOS)
def test_top_n(server, dataset, proto):
    d = dataset
    ev = _init(server, f"metrics={d['load']}&top=1", proto)
    assert [(r["server_id"], r["last"]) for r in ev.rows] == [(d["web2"], 30)]
    ev = _init(server, f"metrics={d['load']}&top=2", proto)
    assert [(r["server_id"], r["last"]) for r in ev.rows] == [(d["web2"], 30), (d["db1"], 20)]
    ev = _init(server, f"metrics={d['load']},{d['mem']}&top=1", proto)
    assert sorted((r["server_id"], r["metric_name"]) for r in ev.rows) == sorted([(d["web2"], d["load"]), (d["db1"], d["mem"])])


@pytest.mark.parametrize("proto", PROTOS)
def test_fleet_series_and_limit_params(server, dataset, proto):
    d = dataset
    ev = _init(server, f"metrics={d['load']}&series=0", proto)
    assert ev.rows == []
    assert len(ev.data["fleet"]) == 1
    f = ev.data["fleet"][0]
    assert f["metric_name"] == d["load"]
    assert (f["series"], f["servers"], f["mean"], f["min"], f["max"], f["p50"]) == (3, 3, 20, 10, 30, 20)
    assert [(t["server_id"], t["value"]) for t in f["top"]] == [(d["web2"], 30), (d["db1"], 20), (d["web1"], 10)]

    ev = _init(server, f"servers={d['web1']},{d['db1']}&fleet=0", proto)
    assert ev.data["fleet"] == [] and len(ev.rows) == 4

    ev = _init(server, f"servers={d['web1']},{d['db1']}&limit=1", proto)
    assert len(ev.rows) == 1 and ev.data.get("truncated") is True


INVALID_QUERIES = ["top=0", "top=1001", "top=abc", "fleet=2", "series=maybe", "limit=0", "limit=100001",
                   "interval=0", "interval=60001", "interval=x", "metrics=bad%20name", "servers=bad!id",
                   "heatmap=2", "warn=abc", "crit=nan", "worst=up", "stale=0", "cells=20001", "scale=5,1", "labels=novalue",
                   "focus=bad!id", "origin=elsewhere"]


@pytest.mark.parametrize("query", INVALID_QUERIES)
def test_invalid_query_is_400(server, query):
    for proto in PROTOS:
        resp = h.curl(server, "/api/dashboard/stream?" + query, proto=proto, timeout=10)
        assert resp.status == 400, (proto, query, resp.body)
        assert resp.headers.get("content-type", "").startswith("application/json")
        param = query.split("=")[0]
        assert param in resp.json()["error"], resp.json()


def test_unknown_params_are_ignored(server, ids):
    ev = _init(server, f"servers={ids}-none&_={h.now_ms()}", "h1")
    assert ev.rows == []


@pytest.mark.parametrize("proto", PROTOS)
def test_interval_sends_every_nth_tick(server, ids, proto):
    with h.SSEClient(server, f"servers={ids}-x&interval=1000", proto=proto) as sse:
        first = sse.next_event()
        updates = [sse.next_event(5), sse.next_event(5)]
        assert first.event == "init" and all(u.event == "update" for u in updates)
        evs = [first, *updates]
        assert [y.seq - x.seq for x, y in zip(evs, evs[1:])] == [1000 // h.TICK_MS] * 2


@pytest.mark.parametrize("proto", PROTOS)
def test_last_event_id_resume(server, ids, proto):
    sid = f"{ids}-r"
    h.ingest(server, h.ndjson([{"server_id": sid, "metric_name": "m1", "value": 1},
                               {"server_id": sid, "metric_name": "m2", "value": 2}]), "curl-h1")
    with h.SSEClient(server, f"servers={sid}", proto=proto) as live:
        seen_both = live.wait_state(lambda s: len(s) == 2, what="both series")
        mark = seen_both.id  # every change so far has seq <= this
        h.ingest(server, h.ndjson([{"server_id": sid, "metric_name": "m2", "value": 22}]), "curl-h1")
        changed = live.wait_event(lambda e: any(r["last"] == 22 for r in e.rows), what="m2 change")
        latest = changed.id

    # Header: the first event is an update with only what changed after `mark`.
    for headers, query in (({"Last-Event-ID": mark}, f"servers={sid}"),
                           ({}, f"servers={sid}&lastEventId={mark}")):
        with h.SSEClient(server, query, proto=proto, headers=headers) as sse:
            ev = sse.next_event()
            assert ev.event == "update", (headers, query, ev)
            assert ev.retry == 2000 and ev.epoch == changed.epoch and ev.seq >= changed.seq
            assert [(r["metric_name"], r["last"]) for r in ev.rows] == [("m2", 22)], ev.rows
            assert sse.next_event().event == "update"

    # Resuming from the newest id: nothing changed since.
    with h.SSEClient(server, f"servers={sid}", proto=proto, headers={"Last-Event-ID": latest}) as sse:
        ev = sse.next_event()
        assert ev.event == "update" and ev.rows == []

    # An id from another process (unknown epoch): a fresh snapshot.
    with h.SSEClient(server, f"servers={sid}", proto=proto, headers={"Last-Event-ID": "zzzzzz-1"}) as sse:
        ev = sse.next_event()
        assert ev.event == "init"
        assert sorted((r["metric_name"], r["last"]) for r in ev.rows) == [("m1", 1), ("m2", 22)]


@pytest.fixture(scope="module")
def wide(server):
    """One metric reported by 15 servers (values 0..14), published."""
    p = h.uid("w")
    d = {"metric": f"{p}_wide", "sids": [f"{p}-s{i:02d}" for i in range(15)]}
    h.ingest(server, h.ndjson({"server_id": s, "metric_name": d["metric"], "value": i}
                              for i, s in enumerate(d["sids"])), "curl-h2c")
    h.sse_rows(server, d["sids"], lambda s: len(s) == 15)
    return d


def test_top_n_larger_than_ten(server, wide):
    ev = _init(server, f"metrics={wide['metric']}&top=12&fleet=0", "h1")
    assert [r["last"] for r in ev.rows] == list(range(14, 2, -1))


def test_top_n_among_selected_servers(server, wide):
    sids = wide["sids"]
    ev = _init(server, f"metrics={wide['metric']}&servers={sids[0]},{sids[1]}&top=1&fleet=0", "h1")
    assert [(r["server_id"], r["last"]) for r in ev.rows] == [(sids[1], 1)]


@pytest.mark.parametrize("proto", PROTOS)
def test_fleet_view_heatmap_and_focus(server, dataset, proto):
    """The dashboard's subscription: one metric's fleet view (counts, distribution, one heat byte per
    server, member ids), the top row, and every series of a focused server."""
    import base64
    d = dataset
    q = f"metrics={d['load']}&heatmap=1&top=1&warn=15&crit=25&fleet=0&server_prefix={d['p']}&focus={d['db1']}&scale=0,253"
    ev = _init(server, q, proto)
    (view,) = ev.data["views"]
    assert view["metric_name"] == d["load"]
    assert (view["servers"], view["reporting"], view["stale"]) == (3, 3, 0)
    assert (view["over_warn"], view["over_crit"]) == (2, 1)
    assert (view["min"], view["p50"], view["max"]) == (10, 20, 30)
    # Natural order of ids: db-1, web-1, web-2; scale 0..253 makes each heat byte value + 2.
    assert view["members"] == [d["db1"], d["web1"], d["web2"]]
    assert list(base64.b64decode(view["heat"])) == [22, 12, 32]
    assert [h.row_key(r)[:2] for r in ev.rows] == [(d["web2"], d["load"]), (d["db1"], d["load"]), (d["db1"], d["mem"])]
    assert ev.data["fleet"] == []


def test_catalog_lists_metrics(server, dataset):
    cat = server.get_json("/api/catalog")
    by = {m["metric_name"]: m for m in cat["metrics"]}
    assert by[dataset["load"]]["servers"] == 3 and by[dataset["load"]]["series"] == 3
    assert by[dataset["mem"]]["servers"] == 2
    assert cat["tick_ms"] > 0 and cat["stale_after_ms"] == 30000
