"""Live row values seen by a dashboard: last-by-timestamp, 1-minute and 5-minute windows, fleet rollup."""

from __future__ import annotations

import pytest

import rtd_helpers as h

ROW_KEYS = {"server_id", "metric_name", "last", "lastUpdate", "count", "avg", "min", "max", "count1m", "count5m",
            "avg5m", "min5m", "max5m", "p50", "p95", "p99", "seq"}
FLEET_KEYS = {"metric_name", "series", "servers", "mean", "min", "p50", "p95", "p99", "max", "top"}


def test_row_and_fleet_schema(server, ids):
    sid, metric = f"{ids}-schema", f"{ids}_schema"
    h.ingest(server, h.ndjson([{"server_id": sid, "metric_name": metric, "value": 3, "labels": {"a": "b"}},
                               {"server_id": sid, "metric_name": metric, "value": 4}]), "curl-h1")
    with h.SSEClient(server, f"servers={sid}&metrics={metric}") as sse:
        sse.wait_state(lambda s: len(s) == 2)
        for key, row in sse.state.items():
            assert set(row) == ROW_KEYS | ({"labels"} if key[2] else set()), row
        f = sse.fleet[metric]
        assert set(f) == FLEET_KEYS
        assert (f["series"], f["servers"], f["min"], f["max"], f["mean"]) == (2, 1, 3, 4, 3.5)
        assert [(t["server_id"], t.get("labels"), t["value"]) for t in f["top"]] == [(sid, None, 4), (sid, "a=b", 3)]


def test_last_is_latest_by_timestamp_and_windows(server, ids):
    sid = f"{ids}-win"
    now = h.now_ms()
    body = h.ndjson([
        {"server_id": sid, "metric_name": "m", "value": 2, "ts": now},
        {"server_id": sid, "metric_name": "m", "value": 3, "ts": now - 5_000},     # older: not `last`
        {"server_id": sid, "metric_name": "m", "value": 1, "ts": now - 90_000},    # outside the 1 m window
    ])
    h.ingest(server, body, "curl-h1")
    state = h.sse_rows(server, [sid], lambda s: s.get((sid, "m", ""), {}).get("count") == 3)
    row = state[(sid, "m", "")]
    assert (row["last"], row["lastUpdate"]) == (2, now)
    assert (row["count1m"], row["min"], row["max"], row["avg"]) == (2, 2, 3, 2.5)


def test_late_sample_for_a_skipped_minute_counts_in_5m_window(server, ids):
    """Out-of-order data (e.g. an agent resending after a reconnect): a sample for minute M-1 that
    arrives after the series jumped from M-2 to M still counts in the 5-minute window.
    (Regression: the 03:09 build dropped it from avg5m/min5m/max5m while /api/history had it.)"""
    sid = f"{ids}-late"
    now = h.now_ms()
    minute = now - now % 60_000
    h.ingest(server, h.ndjson([
        {"server_id": sid, "metric_name": "m", "value": 1, "ts": minute - 120_000 + 1_000},
        {"server_id": sid, "metric_name": "m", "value": 2, "ts": now},
        {"server_id": sid, "metric_name": "m", "value": 100, "ts": minute - 60_000 + 1_000},  # late, minute M-1
    ]), "curl-h1")
    hist = h.wait_until(lambda: (x := server.get_json(f"/api/history?server_id={sid}&metric_name=m&from=-10m"))
                        and sum(p["count"] for p in x["points"]) == 3 and x, what="3 samples in history")
    assert max(p["max"] for p in hist["points"]) == 100
    state = h.sse_rows(server, [sid], lambda s: s.get((sid, "m", ""), {}).get("count") == 3)
    row = state[(sid, "m", "")]
    assert (row["min5m"], row["max5m"]) == (1, 100), row
    assert row["avg5m"] == pytest.approx(103 / 3)
