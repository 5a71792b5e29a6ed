"""The webhook gateway against the real stack: `ot api` runs as a child process (the real server),
readings are read back from Kafka, the lake and Redis; every error answers problem+json."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ot_pipeline_tests.support.operator_stack import free_port, running_api
from ot_tools import drills
from streaming.api.keys import Role, new_key
from streaming.events import decode_avro, parse_dlq_headers
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack

INGEST_SECRET, INGEST = new_key("plant-a", Role.INGEST)
READ_SECRET, READER = new_key("dashboard", Role.READ)
URL = "/webhook/sensor-data"


def reading(machine: str = "press-07", seq: int = 1, **overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": f"{machine}:{seq}",
        "machine_id": machine,
        "machine_type": "MOTOR",
        "line_id": "line-a",
        "metric": "temperature",
        "unit": "°C",
        "value": 70.0 + seq % 10,
        "ts": int(time.time() * 1000) - 5_000 + seq,
        "seq": seq,
        "status_code": 0,
        "quality": "GOOD",
    }
    record.update(overrides)
    return record


@contextmanager
def api_server(
    settings: Settings, log: Path, **env: str
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """`ot api` on a free port with these settings and the ingest and read keys."""
    with running_api(settings, log, f"{INGEST.entry},{READER.entry}", **env) as server:
        yield server


def post(client: httpx.Client, body: Any, key: str | None = INGEST_SECRET, **kw: Any) -> Any:
    headers = {"X-API-Key": key} if key else {}
    headers.update(kw.pop("headers", {}))
    if isinstance(body, dict | list):
        return client.post(URL, json=body, headers=headers, **kw)
    headers.setdefault("Content-Type", "application/json")  # bytes, text or a chunk iterator
    return client.post(URL, content=body, headers=headers, **kw)


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every message of a topic, from the start (waits until the high watermarks are reached)."""
    marks = drills.watermarks(settings, topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "t-api-read"}
    )
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    need = sum(high - low for low, high in marks.values())
    got: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < need and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return got


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] == f"urn:ot:problem:{kind}", body
    assert body["title"] and body["detail"]
    return body


def test_webhook_batches_land_in_kafka_the_lake_and_redis(isolated: Settings, tmp_path: Path):
    batch = [reading("press-07", seq) for seq in range(50)]
    ndjson = "\n".join(json.dumps(reading("pump-02", seq)) for seq in range(30)) + "\n"
    with api_server(isolated, tmp_path / "api.log") as (client, _):
        one = post(client, reading("tank-01", 9, machine_type="TANK"))
        many = post(client, batch)
        bulk = post(client, ndjson, headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
    assert (one.status_code, many.status_code, bulk.status_code) == (202, 202, 202)
    assert one.json()["event_ids"] == ["tank-01:9"] and one.json()["rejected"] == []
    assert many.json()["accepted"] == 50
    assert many.json()["event_ids"] == [f"press-07:{s}" for s in range(50)]
    assert bulk.json()["accepted"] == 30

    # In Kafka: Avro wire format, key = machine_id, one machine's readings in order.
    messages = read_topic(isolated, isolated.topics.readings)
    assert len(messages) == 81
    records = [decode_avro(m.value()) for m in messages]
    assert all(m.key().decode() == r["machine_id"] for m, r in zip(messages, records, strict=True))
    press = [r["seq"] for r in records if r["machine_id"] == "press-07"]
    assert press == list(range(50))
    assert records[0] == {**reading("tank-01", 9, machine_type="TANK"), "ts": records[0]["ts"]}

    # `ot land` lands every one of them; `ot state` shows the machines live.
    log = tmp_path / "consumers.log"
    landed = drills.summary_of(drills.spawn("land", isolated, ["--until-idle", "3"], log))
    assert landed["landed"] == 81 and landed["dead_lettered"] == 0
    ids = set()
    for f in Lake(isolated.lake_dir).landed_files():
        ids |= set(pq.read_table(f.path, columns=["event_id"]).column(0).to_pylist())
    assert ids == {r["event_id"] for r in records}
    state = drills.summary_of(drills.spawn("state", isolated, ["--until-idle", "3"], log))
    assert state["applied"] == 81
    rdb = redis.Redis.from_url(isolated.redis_url)
    keys = RedisKeys(isolated.redis_prefix, "unused")
    assert rdb.hget(keys.machine("tank-01"), "type") == b"TANK"
    assert float(rdb.hget(keys.machine("pump-02"), "temperature") or 0) == 70.0 + 29 % 10


def test_a_mixed_batch_accepts_the_valid_and_dead_letters_the_others(
    isolated: Settings, tmp_path: Path
):
    batch = [
        reading("press-07", 1),
        reading("press-07", 2, value=401.0),  # OUT_OF_RANGE
        5,  # not an object
        reading("press-07", 3, unit="°F"),  # UNIT_MISMATCH
        {"machine_id": "press-07"},  # MISSING_FIELD
        reading("press-07", 4),
    ]
    lines = [json.dumps(reading("m-1", 1)), "{not json", json.dumps(reading("m-1", -2))]
    with api_server(isolated, tmp_path / "api.log") as (client, _):
        mixed = post(client, batch)
        bulk = post(client, "\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
        none_valid = post(client, reading("press-07", 5, status_code=9))
    assert mixed.status_code == 202, mixed.text
    body = mixed.json()
    assert body["accepted"] == 2 and body["event_ids"] == ["press-07:1", "press-07:4"]
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "OUT_OF_RANGE"),
        (2, "INVALID_JSON"),
        (3, "UNIT_MISMATCH"),
        (4, "MISSING_FIELD"),
    ]
    assert "401" in body["rejected"][0]["detail"]
    assert bulk.status_code == 202
    assert [(r["index"], r["reason"]) for r in bulk.json()["rejected"]] == [
        (1, "INVALID_JSON"),
        (2, "NEGATIVE_SEQ"),
    ]
    assert bulk.json()["rejected"][0]["detail"].startswith("line 2: ")
    problem = assert_problem(none_valid, 422, "no-valid-readings")
    assert [r["reason"] for r in problem["rejected"]] == ["BAD_STATUS_CODE"]

    # Every rejected reading is in the DLQ, unchanged, with reason and stage `gateway`.
    letters = read_topic(isolated, isolated.topics.dlq)
    assert len(letters) == 4 + 2 + 1
    found = [(parse_dlq_headers(m.headers()), m.value()) for m in letters]
    assert {(d.reason, d.stage) for d, _ in found} == {
        ("OUT_OF_RANGE", "gateway"),
        ("INVALID_JSON", "gateway"),
        ("UNIT_MISMATCH", "gateway"),
        ("MISSING_FIELD", "gateway"),
        ("NEGATIVE_SEQ", "gateway"),
        ("BAD_STATUS_CODE", "gateway"),
    }
    values = {v for _, v in found}
    assert b"{not json" in values and b"5" in values
    assert json.loads(next(v for d, v in found if d.reason == "OUT_OF_RANGE"))["value"] == 401.0
    out_of_range = next(d for d, _ in found if d.reason == "OUT_OF_RANGE")
    assert out_of_range.topic == isolated.topics.readings and out_of_range.partition == -1
    assert mixed.json()["request_id"] in out_of_range.detail
    assert len(read_topic(isolated, isolated.topics.readings)) == 2 + 1


def test_every_error_answers_problem_json_with_a_useful_message(isolated: Settings, tmp_path: Path):
    limits = {
        "OT_API_MAX_BODY_BYTES": "200000",
        "OT_API_MAX_READINGS": "400",
        "OT_API_RATE_READINGS": "500",
        "OT_API_RATE_BURST_SECONDS": "1",
    }
    log = tmp_path / "api.log"
    with api_server(isolated, log, **limits) as (client, _):
        # 401: no key, unknown key; 403: a key without the ingest role.
        assert (
            "X-API-Key"
            in assert_problem(post(client, reading(), key=None), 401, "unauthorized")["detail"]
        )
        assert_problem(post(client, reading(), key="ot_guess"), 401, "unauthorized")
        forbidden = assert_problem(post(client, reading(), key=READ_SECRET), 403, "forbidden")
        assert "dashboard" in forbidden["detail"] and "ingest" in forbidden["detail"]
        # 415: not JSON / NDJSON.
        plain = post(client, "x", headers={"Content-Type": "text/plain"})
        assert "text/plain" in assert_problem(plain, 415, "unsupported-media-type")["detail"]
        no_type = client.post(URL, content=b"{}", headers={"X-API-Key": INGEST_SECRET})
        assert_problem(no_type, 415, "unsupported-media-type")
        # 400: unparsable JSON, with the position.
        broken = assert_problem(post(client, b'[{"a": 1}\n {"b" 2}]'), 400, "unparsable-json")
        assert broken["position"] == {"line": 2, "column": 2, "offset": 11}
        assert_problem(post(client, b'"a string"'), 400, "not-readings")
        assert_problem(post(client, b"\xff\xfe"), 400, "unparsable-json")
        # 413: too big by Content-Length, too big while streaming (chunked), too many readings.
        big = json.dumps([reading(seq=i) for i in range(1000)]).encode()
        assert_problem(post(client, big), 413, "body-too-large")
        chunked = post(client, iter([big[i : i + 8192] for i in range(0, len(big), 8192)]))
        assert_problem(chunked, 413, "body-too-large")
        many = json.dumps([1] * 401)
        assert "400" in assert_problem(post(client, many), 413, "too-many-readings")["detail"]
        # 422: nothing valid.
        assert_problem(post(client, b"[]"), 422, "no-readings")
        assert_problem(post(client, reading(unit="K")), 422, "no-valid-readings")
        # 429: 500 readings/s with a bucket of 500 (at least one full request).
        answers = [post(client, [reading(seq=i) for i in range(200)]) for _ in range(4)]
        assert [a.status_code for a in answers][:2] == [202, 202]
        limited = assert_problem(answers[-1], 429, "rate-limited")
        assert int(answers[-1].headers["Retry-After"]) >= 1 and limited["retry_after"] >= 1
        # Unknown route and wrong method: problem+json too.
        assert_problem(client.get("/nope"), 404, "not-found")
        assert_problem(client.get(URL), 405, "method-not-allowed")
        # Docs are there, with examples.
        spec = client.get("/openapi.json").json()
        op = spec["paths"][URL]["post"]
        assert "application/x-ndjson" in op["requestBody"]["content"]
        assert {"202", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(
            op["responses"]
        )
        assert client.get("/docs").status_code == 200

    # One JSON log line per request, naming the key but never showing it.
    text = log.read_text()
    assert INGEST_SECRET not in text and READ_SECRET not in text
    requests = [json.loads(line) for line in text.splitlines() if '"event": "request"' in line]
    assert {r["status"] for r in requests} >= {202, 400, 401, 403, 413, 415, 422, 429}
    assert any(r["key"] == "plant-a" and r["accepted"] == 200 for r in requests)


def test_kafka_unreachable_is_a_503_with_retry_after_and_nothing_accepted(
    isolated: Settings, tmp_path: Path
):
    from dataclasses import replace

    nowhere = replace(isolated, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with api_server(nowhere, tmp_path / "api.log", OT_API_KAFKA_TIMEOUT_SECONDS="2") as (
        client,
        _,
    ):
        started = time.monotonic()
        answer = post(client, [reading(seq=1), reading(seq=2, value=1e9)])
        waited = time.monotonic() - started
    body = assert_problem(answer, 503, "kafka-unavailable")
    assert int(answer.headers["Retry-After"]) >= 1
    assert "accepted" not in body and "event_ids" not in body
    assert "nothing was accepted" in body["detail"]
    assert waited < 15


def test_shutdown_lets_the_request_in_flight_finish(isolated: Settings, tmp_path: Path):
    body = json.dumps([reading(seq=i) for i in range(100)]).encode()
    sent_half = threading.Event()

    def slowly() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        sent_half.set()
        time.sleep(1.5)
        yield body[len(body) // 2 :]

    with api_server(isolated, tmp_path / "api.log") as (client, proc):
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(r=post(client, slowly())))
        worker.start()
        assert sent_half.wait(10)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # mid-request
        worker.join(30)
        assert proc.wait(30) == 0
    assert result["r"].status_code == 202 and result["r"].json()["accepted"] == 100
    assert len(read_topic(isolated, isolated.topics.readings)) == 100


@pytest.fixture
def gateway_url(isolated: Settings, tmp_path: Path) -> Iterator[str]:
    with api_server(isolated, tmp_path / "api.log") as (client, _):
        yield str(client.base_url)


@functools.cache
def _operations() -> list[Any]:
    """Every operation of the app's OpenAPI schema (read from the app, no server needed)."""
    import schemathesis

    from streaming.api.app import create_app

    schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
    return [result.ok() for result in schema.get_all_operations()]


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(data=st.data())
def test_nothing_generated_from_the_openapi_schema_makes_a_5xx(gateway_url: str, data: Any):
    import schemathesis

    operation = data.draw(st.sampled_from(_operations()), label="operation")
    mode = data.draw(st.sampled_from(list(schemathesis.GenerationMode)), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    response = case.call(base_url=gateway_url, headers={"X-API-Key": INGEST_SECRET})
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)


def test_rate_limit_buckets_live_in_redis_and_are_shared_by_every_process(isolated: Settings):
    import asyncio

    import redis.asyncio as aioredis

    from streaming.api.ratelimit import Limits, RateLimiter

    limits = Limits(
        requests_per_second=10, readings_per_second=100, burst_seconds=1, max_readings=50
    )

    async def scenario() -> tuple[list[float], list[float], float]:
        clients = [aioredis.Redis.from_url(isolated.redis_url) for _ in range(2)]
        a, b = (RateLimiter(c, isolated.redis_prefix, limits) for c in clients)
        try:
            # Two "processes" draw from one bucket of 10 requests: the 11th is refused.
            alternating = [await (a if i % 2 else b).take("plant-a", 1, 0) for i in range(11)]
            # Concurrent takes share one pipelined round trip; another key has its own bucket.
            other = await asyncio.gather(*(a.take("plant-b", 1, 40) for _ in range(3)))
            return alternating, list(other), await b.take("plant-a", 1, 0)
        finally:
            for c in clients:
                await c.aclose()

    alternating, other, again = asyncio.run(scenario())
    assert alternating[:10] == [0.0] * 10 and 0 < alternating[10] <= 0.1
    assert other[:2] == [0.0, 0.0] and 0.18 <= other[2] <= 0.2  # 20 of 100 left, 40 needed
    assert again > 0


def test_rate_limit_leases_spare_round_trips_but_never_exceed_the_shared_bucket(
    isolated: Settings,
):
    """Two "processes" ask as fast as they can for 1 request + 1 reading at a time from one key
    limited to 1,000 requests/s (a bucket of 1,000): far from the limit they serve most requests
    from leases, without a round trip to Redis; together they admit no more than the bucket plus
    its refill (and, near the limit, nearly all of it: leased tokens are not lost)."""
    import asyncio

    import redis.asyncio as aioredis

    from streaming.api.ratelimit import Limits, RateLimiter

    limits = Limits(
        requests_per_second=1_000, readings_per_second=100_000, burst_seconds=1, max_readings=10
    )
    assert (limits.request_lease, limits.reading_lease) == (10, 1_000) and limits.leases

    async def scenario() -> tuple[int, int, float, int, int]:
        clients = [aioredis.Redis.from_url(isolated.redis_url) for _ in range(2)]
        a, b = (RateLimiter(c, isolated.redis_prefix, limits) for c in clients)
        try:
            # Far from the limit: 400 takes, two fifths of the bucket.
            started = time.monotonic()
            first = [await (a if i % 2 else b).take("plant-a", 1, 1) for i in range(400)]
            assert first == [0.0] * 400
            spared = 400 - (a.round_trips + b.round_trips)
            # Then past it, for a second and a half: the bucket empties and refills.
            admitted, i = 400, 0
            while time.monotonic() - started < 1.5:
                admitted += await (a if i % 2 else b).take("plant-a", 1, 1) == 0
                i += 1
            elapsed = time.monotonic() - started
            return spared, admitted, elapsed, a.round_trips, b.round_trips
        finally:
            for c in clients:
                await c.aclose()

    spared, admitted, elapsed, *_ = asyncio.run(scenario())
    assert spared >= 300, f"only {spared} of 400 takes served from a lease"
    allowed = 1_000 + 1_000 * elapsed  # the bucket and its refill
    assert admitted <= allowed + 50, (admitted, allowed)  # + clock slack (50 ms of refill)
    assert admitted >= 0.9 * allowed, (admitted, allowed)  # leases do not starve the key
