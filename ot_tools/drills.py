"""Tools for the consumers' drills (tests and benchmark): produce a known set of readings, read
watermarks and the dead-letter topic back, and run a consumer as a child process to kill it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streaming.events import encode_avro_many, event_id_for, parse_dlq_headers
from streaming.events.deadletter import DeadLetter
from streaming.kafka.config import producer_config, reader_config
from streaming.settings import Settings, Topics

METRICS = (("temperature", "°C", 60.0), ("vibration", "mm/s", 3.0), ("pressure", "bar", 5.0))
GARBAGE = (b"", b"\x00\x00\x00\x00\x01\xff\xff", b"{not json", b"\x07hello", b'{"value": 1}')


def readings(
    n: int,
    *,
    machines: int = 50,
    start_ms: int | None = None,
    step_ms: int = 10,
    garbage_every: int = 0,
    seed: int = 7,
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: valid Avro readings of a small fleet, a garbage payload every
    `garbage_every` messages. Values stay inside the streaming alert limits unless asked."""
    records = reading_records(n, machines=machines, start_ms=start_ms, step_ms=step_ms, seed=seed)
    keys = [r["machine_id"].encode() for r in records]
    values = encode_avro_many(records)
    if garbage_every:
        for i in range(garbage_every - 1, n, garbage_every):
            values[i] = GARBAGE[(i // garbage_every) % len(GARBAGE)]
    return list(zip(keys, values, strict=True))


def reading_records(
    n: int,
    *,
    machines: int = 50,
    start_ms: int | None = None,
    step_ms: int = 10,
    seed: int = 7,
) -> list[dict[str, Any]]:
    """The records behind `readings`: contract dicts, ready to encode (or to spoil)."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - n * step_ms if start_ms is None else start_ms
    records = []
    for i in range(n):
        machine = f"m{i % machines:03d}"
        metric, unit, base = METRICS[(i // machines) % len(METRICS)]
        seq = i
        records.append(
            {
                "event_id": event_id_for(machine, seq),
                "machine_id": machine,
                "machine_type": "MOTOR",
                "line_id": f"line-{i % machines % 3}",
                "metric": metric,
                "unit": unit,
                "value": base * (1 + 0.05 * rng.random()),
                "ts": start + i * step_ms,
                "seq": seq,
                "status_code": 0,
                "quality": "GOOD",
            }
        )
    return records


def heavy_fleet(
    machines: int = 40, minutes: float = 3.0, seed: int = 3, interval_s: float = 1.0
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of the simulator's `heavy` chaos profile, ending now, in delivery order;
    its malformed messages become undecodable or out-of-range payloads at their place."""
    from datetime import UTC, datetime, timedelta

    import polars as pl

    from streaming.simulator import generate

    start = datetime.now(UTC) - timedelta(minutes=minutes + 1)
    data = generate(machines, start, minutes / 60, interval_s, seed, "heavy")
    frame = data.readings.with_columns(pl.col("ts").dt.epoch("ms"))
    keys = [m.encode() for m in frame["machine_id"]]
    values = encode_avro_many(frame.to_dicts())
    pairs = list(zip(keys, values, strict=True))
    rng = random.Random(seed)
    bad_value = {**frame.row(0, named=True), "value": 1e12}
    for row in data.malformed.iter_rows(named=True):
        kind = row["kind"]
        payload = encode_avro_many([bad_value])[0] if kind == "out_of_range" else GARBAGE[1]
        if kind == "unknown_enum":
            payload = b'{"machine_type": "ROBOT"}'
        pairs.insert(rng.randrange(len(pairs) + 1), (row["machine_id"].encode(), payload))
    return pairs


def produce(settings: Settings, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered")


def watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    consumer = Consumer(reader_config(settings.kafka_bootstrap_servers, "watermarks"))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts
        }
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    """What the headers of every message in the dead-letter topic say, in order."""
    topic = settings.topics.dlq
    marks = watermarks(settings, topic)
    consumer = Consumer(
        reader_config(settings.kafka_bootstrap_servers, f"dlq-reader-{uuid.uuid4().hex[:8]}")
    )
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    need = sum(high - low for low, high in marks.values())
    found: list[DeadLetter] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < need and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=1.0):
                if m.error() is None:
                    found.append(parse_dlq_headers(m.headers()))  # type: ignore[arg-type]
    finally:
        consumer.close()
    return found


def dead_lettered_sources(settings: Settings) -> list[tuple[int, int]]:
    """(source partition, source offset) of every message in the dead-letter topic, in order."""
    return [(letter.partition, letter.offset) for letter in dead_letters(settings)]


def isolated_settings(stack: Settings, lake_dir: Path, replication_factor: int = 1) -> Settings:
    """`stack` with fresh, uniquely named topics (created), a Redis key prefix, a PostgreSQL schema
    and a lake of its own (tests and drills: several share one stack); `clean_up` removes them."""
    from streaming.stack.topics import create_topics

    suffix = uuid.uuid4().hex[:10]
    topics = Topics(
        readings=f"sensor-readings-{suffix}",
        dlq=f"sensor-readings-{suffix}.dlq",
        alerts=f"alerts-{suffix}",
        faults=f"sim.faults-{suffix}",
    )
    create_topics(
        stack.kafka_bootstrap_servers,
        topics,
        readings_partitions=stack.readings_partitions,
        replication_factor=replication_factor,
    )
    return replace(
        stack,
        topics=topics,
        lake_dir=lake_dir,
        redis_prefix=f"ot-test-{suffix}:",
        pg_schema=f"ot_test_{suffix}",
    )


def clean_up(settings: Settings) -> None:
    """Remove what `isolated_settings` made: its topics, Redis keys and PostgreSQL schema."""
    import psycopg
    import redis

    from streaming.redis_keys import RedisKeys
    from streaming.stack.topics import delete_topics

    delete_topics(settings.kafka_bootstrap_servers, settings.topics.all())
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=RedisKeys(settings.redis_prefix).scan_all, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {settings.pg_schema} CASCADE")


def child_env(settings: Settings) -> dict[str, str]:
    """Environment that makes an `ot` command in a child process use these settings."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "OT_PG_DSN": settings.pg_dsn,
        "OT_PG_SCHEMA": settings.pg_schema,
        "OT_LAKE_DIR": str(settings.lake_dir),
        "DAGSTER_HOME": str(settings.dagster_home),
        "OT_TOPIC_READINGS": settings.topics.readings,
        "OT_TOPIC_DLQ": settings.topics.dlq,
        "OT_TOPIC_ALERTS": settings.topics.alerts,
        "OT_TOPIC_FAULTS": settings.topics.faults,
        "OT_REDIS_PREFIX": settings.redis_prefix,
        "OT_OFFLINE_AFTER_SECONDS": str(settings.offline_after_seconds),
        "OT_MAX_EVENT_AGE_HOURS": str(settings.max_event_age_hours),
        "OT_MAX_FUTURE_SECONDS": str(settings.max_future_seconds),
        "PYTHONUNBUFFERED": "1",
    }


def produce_paced(
    settings: Settings, topic: str, messages: Sequence[tuple[bytes, bytes]], seconds: float
) -> threading.Thread:
    """Produce in the background, spread over about `seconds`, so consumers die mid-stream."""
    chunks = max(1, int(seconds / 0.1))
    size = max(1, len(messages) // chunks + 1)

    def work() -> None:
        producer = Producer(producer_config(settings))
        started = time.monotonic()
        for n, i in enumerate(range(0, len(messages), size)):
            for key, value in messages[i : i + size]:
                while True:
                    try:
                        producer.produce(topic, value=value, key=key)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            delay = started + (n + 1) * seconds / chunks - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if producer.flush(60):
            raise RuntimeError("paced producer: messages not delivered")

    thread = threading.Thread(target=work, name="paced-producer", daemon=True)
    thread.start()
    return thread


def spawn(
    command: str,
    settings: Settings,
    args: Sequence[str],
    log: Path,
    prefix: Sequence[str] = (),
    out: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """`ot <command> <args>` as a child process (behind `prefix`, e.g. `ip netns exec NS`); logs
    (stderr) appended to `log`; stdout piped, or appended to `out` for a long run."""
    with open(log, "a") as err, open(out or os.devnull, "a") as sink:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "streaming.cli", command, *args],
            env={**child_env(settings), **(env or {})},
            stdout=subprocess.PIPE if out is None else sink,
            stderr=err,
            text=True,
        )


def summary_of(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """Wait for a child and parse the JSON of its last stdout line."""
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child exited {proc.returncode}: {out[-500:]!r}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def kill_repeatedly(
    command: str,
    settings: Settings,
    args: Sequence[str],
    log: Path,
    *,
    kills: int,
    seed: int = 1,
    alive: tuple[float, float] = (0.1, 1.5),
) -> int:
    """Start the consumer, wait until it has its partitions, SIGKILL it at a random moment
    within `alive` seconds after that; `kills` times. Returns the kills that hit a live process."""
    rng = random.Random(seed)
    hits = 0
    for _ in range(kills):
        assigned_before = _assignments(log)
        proc = spawn(command, settings, args, log)
        deadline = time.monotonic() + 30
        while _assignments(log) == assigned_before and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(*alive))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits += 1
        proc.communicate(timeout=30)
    return hits


def _assignments(log: Path) -> int:
    try:
        return log.read_text().count('"event": "assigned"')
    except FileNotFoundError:
        return 0
