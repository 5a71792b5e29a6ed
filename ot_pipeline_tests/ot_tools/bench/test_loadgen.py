"""The open-loop generator of `ot bench gateway`: its bodies are valid readings under the event
contract, and its pure helpers (response head, percentiles) are right."""

from __future__ import annotations

import time

import orjson

from ot_tools.bench.loadgen import Bodies, parse_head, percentile, request_bytes
from streaming.api.webhook_checks import check_requests


def test_bodies_are_valid_readings_with_fresh_event_ids() -> None:
    now = int(time.time() * 1000)
    single, batch = Bodies(1, now), Bodies(100, now, seq_base=1_000)
    one = orjson.loads(single.next())
    many = orjson.loads(batch.next()) + orjson.loads(batch.next())
    assert isinstance(one, dict) and len(many) == 200
    payloads = [orjson.dumps(r) for r in [one, *many]]
    (checked,) = check_requests([payloads], now, max_future_ms=300_000, max_age_ms=3_600_000)
    assert checked.rejected == [] and len(set(checked.event_ids)) == 201
    assert many[0]["seq"] == 1_001 and many[0]["event_id"].endswith(":1001")


def test_request_bytes_and_response_heads() -> None:
    raw = request_bytes(8000, "ot_k", b"{}")
    assert raw.startswith(b"POST /webhook/sensor-data HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 2\r\n\r\n{}" in raw and b"X-API-Key: ot_k" in raw
    head = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n"
    assert parse_head(head) == (202, 57)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 99, 100)] == [50.0, 99.0, 100.0]
    assert percentile([], 50) == 0.0 and percentile([7.0], 99) == 7.0
