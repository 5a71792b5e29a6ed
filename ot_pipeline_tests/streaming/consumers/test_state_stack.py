"""The state writer against the real Kafka and Redis: exact counters, live state, alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from ot_pipeline_tests.support.redis_server import RedisServer
from ot_tools import drills
from streaming.consumers.state_writer import MEMBERSHIP, StateWriter
from streaming.events import decode_batch, encode_avro_many, event_id_for
from streaming.kafka.config import reader_config
from streaming.kafka.lifecycle import Bounds, StopFlag
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack


@pytest.fixture
def rdb(isolated: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(isolated.redis_url)
    yield client
    for key in client.scan_iter(RedisKeys(isolated.redis_prefix).scan_all):
        client.delete(key)


def _valid_count(messages: list[tuple[bytes, bytes]]) -> int:
    decoded = decode_batch(
        [v for _, v in messages],
        int(time.time() * 1000),
        max_future_ms=300_000,
        max_age_ms=30 * 86_400_000,
    )
    return decoded.valid.num_rows


def _counted(rdb: redis.Redis, keys: RedisKeys) -> int:
    days = [k for k in rdb.scan_iter(keys.scan_days) if not k.endswith(b":machines")]
    return sum(int(rdb.get(k) or 0) for k in days)


def _record(machine: str, seq: int, metric: str, unit: str, value: float, status: int = 0) -> dict:
    return {
        "event_id": event_id_for(machine, seq),
        "machine_id": machine,
        "machine_type": "MOTOR",
        "line_id": "line-9",
        "metric": metric,
        "unit": unit,
        "value": value,
        "ts": int(time.time() * 1000) - 1000 + seq,
        "seq": seq,
        "status_code": status,
        "quality": "GOOD",
    }


def test_state_writer_applies_each_valid_reading_once_and_keeps_live_state(
    isolated: Settings, rdb: redis.Redis
) -> None:
    fleet = drills.readings(6000, machines=30, garbage_every=50)
    hot = [_record("hot-1", i, "temperature", "°C", v) for i, v in enumerate([70, 150, 160, 80])]
    faulty = [_record("faulty-1", i, "vibration", "mm/s", 2.0, s) for i, s in enumerate([0, 2, 2])]
    special = [
        (r["machine_id"].encode(), v)
        for r, v in zip(hot + faulty, encode_avro_many(hot + faulty), strict=True)
    ]
    drills.produce(isolated, isolated.topics.readings, fleet + special)
    group = f"state-{isolated.topics.readings}"

    writer = StateWriter(isolated, replace(MEMBERSHIP, group=group, batch_size=2000))
    summary = writer.run(Bounds(until_idle=2.0), StopFlag())

    keys = RedisKeys(isolated.redis_prefix, group)
    valid = _valid_count(fleet) + len(special)
    assert summary["applied"] == valid and summary["invalid"] == len(fleet) + len(special) - valid
    assert _counted(rdb, keys) == valid
    assert int(rdb.hget(keys.metrics, "applied") or 0) == valid
    marks = drills.watermarks(isolated, isolated.topics.readings)
    stored = {int(p): int(o) for p, o in rdb.hgetall(keys.offsets).items()}
    assert stored == {p: high - 1 for p, (_, high) in marks.items() if high > 0}
    assert rdb.zcard(keys.machines) == 32

    hot_state = rdb.hgetall(keys.machine("hot-1"))
    assert float(hot_state[b"temperature"]) == 80.0  # latest value wins
    assert hot_state[b"status"] == b"ONLINE" and hot_state[b"type"] == b"MOTOR"
    assert rdb.hget(keys.machine("faulty-1"), "status") == b"FAULT"
    active = [json.loads(v) for v in rdb.hvals(keys.alerts_active)]
    assert [(a["machine_id"], a["rule"], a["severity"]) for a in active] == [
        ("faulty-1", "device_fault", "HIGH")
    ]
    log = [json.loads(v) for v in rdb.lrange(keys.alerts_log, 0, -1)]
    hard = [e for e in log if e["rule"] == "temperature_hard"]
    assert sorted(e["event"] for e in hard) == ["cleared", "opened"]
    assert hard[0]["alert_id"] == hard[1]["alert_id"] and hard[0]["threshold"] == 120.0
    assert drills.watermarks(isolated, isolated.topics.alerts)[0][1] == len(log)  # published
    assert rdb.llen(keys.outbox(0)) + sum(rdb.llen(keys.outbox(p)) for p in range(1, 6)) == 0


def test_state_writer_marks_silent_machines_offline_on_a_timer(
    isolated: Settings, rdb: redis.Redis
) -> None:
    settings = replace(isolated, offline_after_seconds=1.0)
    drills.produce(settings, settings.topics.readings, drills.readings(60, machines=3))
    group = f"state-{settings.topics.readings}"

    writer = StateWriter(settings, replace(MEMBERSHIP, group=group), sweep_every_s=0.2)
    writer.run(Bounds(until_idle=2.5), StopFlag())  # no message arrives after the first second

    keys = RedisKeys(settings.redis_prefix, group)
    assert {rdb.hget(keys.machine(f"m{i:03d}"), "status") for i in range(3)} == {b"OFFLINE"}
    active = [json.loads(v) for v in rdb.hvals(keys.alerts_active)]
    assert sorted(a["machine_id"] for a in active if a["rule"] == "offline") == [
        "m000",
        "m001",
        "m002",
    ]


def test_state_writer_judges_no_machine_offline_while_its_own_kafka_path_is_disturbed(
    isolated: Settings, rdb: redis.Redis
) -> None:
    """A writer that cannot read hears nothing from any machine: while librdkafka reports errors
    (here the error callback it calls on a broken transport) silence is unknown, and the
    machines go OFFLINE only after a whole OFFLINE period of undisturbed reading."""
    settings = replace(isolated, offline_after_seconds=1.0)
    drills.produce(settings, settings.topics.readings, drills.readings(60, machines=3))
    group = f"state-{settings.topics.readings}"
    keys = RedisKeys(settings.redis_prefix, group)
    writer = StateWriter(settings, replace(MEMBERSHIP, group=group), sweep_every_s=0.2)
    summary: list[dict] = []
    runner = threading.Thread(
        target=lambda: summary.append(writer.run(Bounds(until_idle=6.0), StopFlag()))
    )
    runner.start()
    try:
        disturbed_until = time.monotonic() + 3.5
        while time.monotonic() < disturbed_until:
            writer.runtime._client_error(KafkaError(KafkaError._TRANSPORT, "broker down (drill)"))
            time.sleep(0.25)
        assert not rdb.hvals(keys.alerts_active), "OFFLINE while the writer could not know"
        ended = time.monotonic()
        while not rdb.hvals(keys.alerts_active) and time.monotonic() - ended < 4.0:
            time.sleep(0.1)
        waited = time.monotonic() - ended
    finally:
        runner.join(timeout=20)
    active = [json.loads(v) for v in rdb.hvals(keys.alerts_active)]
    assert sorted(a["machine_id"] for a in active if a["rule"] == "offline") == [
        "m000",
        "m001",
        "m002",
    ]
    assert 0.8 <= waited < 3.0  # one OFFLINE period after the last error, plus a sweep or two
    assert summary and summary[0]["consumed"] == 60


@pytest.mark.slow
def test_state_writer_survives_repeated_sigkill_with_exact_counters(
    isolated: Settings, rdb: redis.Redis, tmp_path: Path
) -> None:
    messages = drills.heavy_fleet(machines=40, minutes=3.0, seed=5)
    producer = drills.produce_paced(isolated, isolated.topics.readings, messages, seconds=14)
    group = f"state-drill-{isolated.topics.readings}"
    args = ["--group", group, "--instance-id", "state-0", "--batch-size", "1500"]
    log = tmp_path / "state.log"

    hits = drills.kill_repeatedly("state", isolated, args, log, kills=10)
    producer.join()
    final = drills.summary_of(drills.spawn("state", isolated, [*args, "--until-idle", "4"], log))

    keys = RedisKeys(isolated.redis_prefix, group)
    valid = _valid_count(messages)
    assert hits == 10 and final["lag"] == 0
    assert _counted(rdb, keys) == valid
    assert int(rdb.hget(keys.metrics, "applied") or 0) == valid
    assert int(rdb.hget(keys.metrics, "invalid") or 0) == len(messages) - valid
    assert int(rdb.hget(keys.metrics, "batches") or 0) > 10


def test_state_writer_counts_a_batch_without_any_valid_reading_and_goes_on(
    isolated: Settings, rdb: redis.Redis
) -> None:
    garbage = [(b"m000", drills.GARBAGE[i % len(drills.GARBAGE)]) for i in range(40)]
    drills.produce(isolated, isolated.topics.readings, garbage)
    group = f"state-{isolated.topics.readings}"

    writer = StateWriter(isolated, replace(MEMBERSHIP, group=group))
    summary = writer.run(Bounds(until_idle=2.0), StopFlag())

    keys = RedisKeys(isolated.redis_prefix, group)
    assert summary["applied"] == 0 and summary["invalid"] == 40
    assert int(rdb.hget(keys.metrics, "invalid") or 0) == 40
    marks = drills.watermarks(isolated, isolated.topics.readings)
    stored = {int(p): int(o) for p, o in rdb.hgetall(keys.offsets).items()}
    assert stored == {p: high - 1 for p, (_, high) in marks.items() if high > 0}


def test_state_writer_commits_what_it_applied_so_group_lag_is_visible(
    isolated: Settings, rdb: redis.Redis
) -> None:
    drills.produce(isolated, isolated.topics.readings, drills.readings(5000, garbage_every=40))
    group = f"state-{isolated.topics.readings}"

    writer = StateWriter(isolated, replace(MEMBERSHIP, group=group, batch_size=700))
    writer.run(Bounds(until_idle=2.0), StopFlag())

    keys = RedisKeys(isolated.redis_prefix, group)
    applied = {int(p): int(o) + 1 for p, o in rdb.hgetall(keys.offsets).items()}
    reader = Consumer(
        {**reader_config(isolated.kafka_bootstrap_servers, "committed"), "group.id": group}
    )
    try:
        marks = drills.watermarks(isolated, isolated.topics.readings)
        asked = [TopicPartition(isolated.topics.readings, p) for p in marks]
        committed = {tp.partition: tp.offset for tp in reader.committed(asked, timeout=10)}
    finally:
        reader.close()
    assert applied == {p: high for p, (_, high) in marks.items() if high > 0}
    assert {p: o for p, o in committed.items() if o >= 0} == applied


def _log_events(log: Path, name: str) -> list[dict]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [e for e in lines if e["event"] == name]


@pytest.mark.slow
def test_state_writer_waits_out_a_paused_then_restarted_redis_and_ends_exact(
    isolated: Settings, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")  # our own: the shared Redis is never paused
    server.start()
    settings = replace(isolated, redis_url=server.url)
    messages = drills.readings(60_000, machines=60, garbage_every=97)
    group = f"state-outage-{settings.topics.readings}"
    log = tmp_path / "state.log"
    try:
        producer = drills.produce_paced(settings, settings.topics.readings, messages, seconds=24)
        args = ["--group", group, "--batch-size", "2000", "--until-idle", "5"]
        writer = drills.spawn("state", settings, args, log)
        deadline = time.monotonic() + 30
        while not (log.exists() and _log_events(log, "assigned")):
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.1)
        time.sleep(2)
        server.pause()  # hung: connections are accepted, nothing answers
        time.sleep(10)
        server.resume()
        time.sleep(4)
        server.kill()  # gone: connections refused; it comes back from its append-only file
        time.sleep(2)
        server.start()
        producer.join()
        summary = drills.summary_of(writer, timeout=180)

        client = redis.Redis.from_url(server.url)
        keys = RedisKeys(settings.redis_prefix, group)
        valid = _valid_count(messages)
        assert summary["lag"] == 0
        assert _counted(client, keys) == valid
        assert int(client.hget(keys.metrics, "applied") or 0) == valid
        assert int(client.hget(keys.metrics, "invalid") or 0) == len(messages) - valid
        marks = drills.watermarks(settings, settings.topics.readings)
        stored = {int(p): int(o) for p, o in client.hgetall(keys.offsets).items()}
        assert stored == {p: high - 1 for p, (_, high) in marks.items() if high > 0}
        down = _log_events(log, "sink_unavailable")
        back = _log_events(log, "sink_recovered")
        assert len(down) >= 2 and len(back) == len(down)
        assert any("Timeout" in e["error"] for e in down)  # the pause
        assert any("Connection" in e["error"] for e in down)  # the restart
        # Backoff, not a hot loop: a handful of probes over about 15 s of outage.
        assert len(_log_events(log, "sink_still_unavailable")) <= 20
    finally:
        server.kill()
