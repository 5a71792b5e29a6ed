"""The local stack: real Kafka, Redis and PostgreSQL, started by the project itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ot_pipeline_tests.support.ports import free_base_port
from streaming.events import decode_batch, encode_avro_many, event_id_for
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings, Topics
from streaming.stack.kafka import storage_format_command
from streaming.stack.local import LocalStack
from streaming.stack.topics import create_topics

pytestmark = pytest.mark.stack


# Three brokers and their controllers (+100).
THREE_BROKERS = (0, 1, 2, 100, 101, 102)


def _readings(n: int, machine: str = "m-1") -> list[dict]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": event_id_for(machine, seq),
            "machine_id": machine,
            "machine_type": "MOTOR",
            "line_id": "line-a",
            "metric": "temperature",
            "unit": "°C",
            "value": 40.0 + seq / 100,
            "ts": now - (n - seq) * 10,
            "seq": seq,
            "status_code": 0,
            "quality": "GOOD",
        }
        for seq in range(n)
    ]


def _produce(bootstrap: str, topic: str, payloads: list[bytes], key: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []

    def on_delivery(err, _msg):  # type: ignore[no-untyped-def]
        if err is not None:
            failures.append(str(err))

    for payload in payloads:
        producer.produce(topic, payload, key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert failures == []


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_stack_round_trips_a_batch_through_kafka_with_the_project_codec(isolated: Settings):
    records = _readings(500)
    _produce(
        isolated.kafka_bootstrap_servers,
        isolated.topics.readings,
        encode_avro_many(records),
        key="m-1",
    )
    payloads = _consume_all(isolated.kafka_bootstrap_servers, isolated.topics.readings, 500)
    assert len(payloads) == 500
    batch = decode_batch(
        payloads, int(time.time() * 1000), max_future_ms=300_000, max_age_ms=3_600_000
    )
    assert batch.rejected == []
    assert batch.valid.column("event_id").to_pylist() == [r["event_id"] for r in records]
    assert batch.valid.column("value").to_pylist() == [r["value"] for r in records]


def test_stack_creates_the_contract_topics_with_their_partitions(stack: Settings):
    meta = AdminClient({"bootstrap.servers": stack.kafka_bootstrap_servers}).list_topics(timeout=10)
    partitions = {name: len(t.partitions) for name, t in meta.topics.items()}
    assert partitions[stack.topics.readings] == 6
    for name in (stack.topics.dlq, stack.topics.alerts, stack.topics.faults):
        assert partitions[name] == 1


def test_stack_redis_writes_and_reads(isolated: Settings):
    client = redis.Redis.from_url(isolated.redis_url)
    key = RedisKeys(isolated.redis_prefix).machine("m-1")
    client.hset(key, mapping={"status": "ONLINE", "temperature": "41.5"})
    try:
        assert client.hgetall(key) == {b"status": b"ONLINE", b"temperature": b"41.5"}
    finally:
        client.delete(key)


def test_stack_postgres_writes_and_reads(isolated: Settings):
    schema = isolated.pg_schema
    with psycopg.connect(isolated.pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(
                f"CREATE TABLE {schema}.t (ts timestamptz PRIMARY KEY, v double precision)"
            )
            with conn.cursor() as cur, cur.copy(f"COPY {schema}.t (ts, v) FROM STDIN") as copy:
                for i in range(100):
                    copy.write_row((f"2026-11-22T10:{i // 60:02d}:{i % 60:02d}Z", float(i)))
            row = conn.execute(f"SELECT count(*), sum(v) FROM {schema}.t").fetchone()
            assert row == (100, float(sum(range(100))))
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_stack_status_exits_nonzero_when_a_service_does_not_answer(tmp_path: Path):
    # Nothing listens on these ports: status must say so, not pretend.
    env = {
        **os.environ,
        "OT_STACK_DIR": str(tmp_path / "stack"),
    }
    stack = LocalStack(root=tmp_path / "stack", redis_port=1, pg_port=2, kafka_port=3, mqtt_port=4)
    assert stack.status() == {
        "kafka": False,
        "redis": False,
        "postgres": False,
        "mosquitto": False,
    }
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
    )
    # The default ports may be up (another folder's stack: TAKEN, not this one's); the exit code
    # must agree with the text.
    states = {line.split()[0] for line in result.stdout.splitlines()}
    assert (result.returncode == 0) == (states == {"up"})


@pytest.mark.slow
def test_three_broker_cluster_replicates_topics_and_survives_a_killed_broker(
    stack: Settings, tmp_path: Path
):
    shared = LocalStack.from_env()
    root = tmp_path / "stack3"
    root.mkdir()
    (root / "kafka-libs").symlink_to(shared.ensure_kafka_jars(), target_is_directory=True)
    cluster = LocalStack(
        root=root, brokers=3, kafka_port=free_base_port(THREE_BROKERS), services=("kafka",)
    )
    try:
        assert cluster.up() == ["kafka-1", "kafka-2", "kafka-3"]
        bootstrap = cluster.bootstrap
        # Brokers learn new topics from the controller asynchronously: the broker that answers
        # may not know the topics `up()` just created for a moment (seen under load in CI).
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 30
        meta = admin.list_topics(timeout=10)
        while not set(Topics().all()) <= set(meta.topics) and time.monotonic() < deadline:
            time.sleep(0.5)
            meta = admin.list_topics(timeout=10)
        readings = meta.topics[Topics().readings]
        assert len(readings.partitions) == 6
        assert {len(p.replicas) for p in readings.partitions.values()} == {3}
        for name in Topics().all():
            assert {len(p.replicas) for p in meta.topics[name].partitions.values()} == {3}

        topic = f"failover-{uuid.uuid4().hex[:8]}"
        create_topics(
            bootstrap,
            Topics(readings=topic, dlq=f"{topic}.dlq", alerts=f"{topic}.a", faults=f"{topic}.f"),
            replication_factor=3,
        )
        first = encode_avro_many(_readings(200, "m-before"))
        _produce(bootstrap, topic, first, key="m-before")

        # Kill the leader of the partition we use: the cluster must elect another and go on.
        leader = (
            AdminClient({"bootstrap.servers": bootstrap})
            .list_topics(topic, timeout=10)
            .topics[topic]
            .partitions
        )
        partition_of_key = None
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
        low_high = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in leader
        }
        consumer.close()
        partition_of_key = next(p for p, (lo, hi) in low_high.items() if hi > lo)
        victim = leader[partition_of_key].leader
        cluster.kill_broker(victim)

        second = encode_avro_many(_readings(200, "m-before"))  # same key: same partition
        _produce(bootstrap, topic, second, key="m-before")
        payloads = _consume_all(bootstrap, topic, 400, timeout=60)
        assert len(payloads) == 400
        assert sorted(payloads) == sorted(first + second)
        new_leader = (
            AdminClient({"bootstrap.servers": bootstrap})
            .list_topics(topic, timeout=10)
            .topics[topic]
            .partitions[partition_of_key]
            .leader
        )
        assert new_leader != victim
    finally:
        cluster.down()


def test_stack_formats_kafka_storage_with_a_cluster_id_that_starts_with_a_dash(tmp_path: Path):
    # About one fresh cluster id in 64 starts with '-': the storage tool must still take it.
    cluster_id = "-" + uuid.uuid4().hex[:21]
    jars = LocalStack.from_env().ensure_kafka_jars()
    node = LocalStack(root=tmp_path / "stack", kafka_port=39092, services=("kafka",))
    props = tmp_path / "server.properties"
    props.write_text(node.kafka.properties(1))
    command = storage_format_command(
        shutil.which("java") or "java", node.kafka.log4j_config(), f"{jars}/*", cluster_id, props
    )
    assert f"--cluster-id={cluster_id}" in command
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    meta = node.kafka.folder / "node-1" / "data" / "meta.properties"
    assert f"cluster.id={cluster_id}" in meta.read_text().splitlines()


def _ot_stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", "stack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_with_one_broker_down_the_stack_stays_three_brokers_degraded_and_restarts_the_node(
    tmp_path: Path,
):
    shared = LocalStack.from_env()
    root = tmp_path / "stack3"
    root.mkdir()
    (root / "kafka-libs").symlink_to(shared.ensure_kafka_jars(), target_is_directory=True)
    base = free_base_port(THREE_BROKERS)
    cluster = LocalStack(root=root, brokers=3, kafka_port=base, services=("kafka",))
    env = {**os.environ, "OT_STACK_DIR": str(root), "OT_STACK_KAFKA_PORT": str(base)}
    try:
        assert cluster.up() == ["kafka-1", "kafka-2", "kafka-3"]
        cluster.kill_broker(1)  # node 1: the one a forgetful stack mistakes for the whole cluster

        listed = _ot_stack(env, "env")
        assert f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}" in listed.stdout, listed.stdout
        status = _ot_stack(env, "status")
        kafka_line = next(line for line in status.stdout.splitlines() if "kafka" in line)
        assert kafka_line.startswith("DEGRADED"), status.stdout
        assert "kafka-1 down" in kafka_line and status.returncode == 1

        started = _ot_stack(env, "start", "kafka")  # like `up`, the Kafka part only
        assert started.returncode == 0, started.stderr
        assert not (root / "kafka" / "1-node").exists(), "a second, empty cluster was created"
        assert "started: kafka-1" in started.stdout
        status = _ot_stack(env, "status")
        assert next(line for line in status.stdout.splitlines() if "kafka" in line).startswith(
            "up"
        ), status.stdout

        restarted = _ot_stack(env, "restart", "kafka-2")
        assert restarted.returncode == 0, restarted.stderr
        assert "started: kafka-2" in restarted.stdout
        meta = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10)
        assert sorted(meta.brokers) == [1, 2, 3]
    finally:
        cluster.down()
    assert not (root / "kafka" / "running-brokers").exists()
