"""`ot bridge mqtt` against the real Mosquitto and Kafka of the local stack: devices publish with
paho-mqtt (a standard client), the bridge forwards to Kafka, and what lands is checked exactly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from ot_tools import drills
from streaming.bridge.client import MqttAddress, MqttClient
from streaming.events import decode_batch, parse_dlq_headers
from streaming.lake import Lake
from streaming.settings import Settings
from streaming.stack.local import LocalStack

pytestmark = pytest.mark.stack

Message = tuple[str, bytes]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **drills.child_env(settings),
        "MQTT_URL": settings.mqtt_url,
        "OT_MQTT_TOPIC_ROOT": settings.mqtt_topic_root,
        **extra,
    }


def _bridge(
    settings: Settings, client_id: str, log: Path, *args: str, **env: str
) -> subprocess.Popen[str]:
    with open(log, "a") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streaming.cli",
                "bridge",
                "mqtt",
                "--client-id",
                client_id,
                *args,
            ],
            env=_env(settings, **env),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def _wait_connected(log: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count('"event": "connected"') >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the bridge did not connect: {log.read_text()[-2000:]}")


def _publish(settings: Settings, messages: Sequence[Message], seconds: float = 0.0) -> None:
    """Publish with paho (MQTT 5, QoS 1) and wait for every PUBACK; spread over `seconds`."""
    address = MqttAddress.from_url(settings.mqtt_url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"device-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(200)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        chunk = 500
        started = time.monotonic()
        infos = []
        for n, i in enumerate(range(0, len(messages), chunk)):
            batch = [client.publish(t, p, qos=1) for t, p in messages[i : i + chunk]]
            infos += batch
            for info in batch[-1:]:
                info.wait_for_publish(30)
            if seconds:
                delay = started + (n + 1) * chunk * seconds / len(messages) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        for info in infos:
            info.wait_for_publish(30)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _consume(settings: Settings, topic: str, idle_s: float = 3.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    marks = drills.watermarks(settings, topic)
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    want = sum(high - low for low, high in marks.values())
    got: list[Any] = []
    last = time.monotonic()
    try:
        while len(got) < want and time.monotonic() - last < idle_s:
            batch = [m for m in consumer.consume(5000, timeout=0.5) if m.error() is None]
            if batch:
                last = time.monotonic()
            got += batch
    finally:
        consumer.close()
    return got


def _reading(seq: int, machine: str, now: int) -> tuple[str, str, bytes]:
    metric = ("temperature", "pressure", "vibration")[seq % 3]
    value = {"temperature": 60.0, "pressure": 5.0, "vibration": 2.0}[metric] + seq % 7
    payload = json.dumps({"value": value, "ts": now - 1000 + seq % 500, "seq": seq}).encode()
    return machine, metric, payload


def _fleet(settings: Settings, n: int, machines: int = 20) -> tuple[list[Message], set[str]]:
    now = int(time.time() * 1000)
    root = settings.mqtt_topic_root
    messages, ids = [], set()
    for i in range(n):
        machine = f"m{i % machines:03d}"
        machine, metric, payload = _reading(i, machine, now)
        messages.append((f"{root}/line-{i % 3}/{machine}/{metric}", payload))
        ids.add(f"{machine}:{i}")
    return messages, ids


def test_bridge_forwards_valid_readings_and_dead_letters_the_rest_with_stage_mqtt(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    settings = mqtt_isolated
    root = settings.mqtt_topic_root
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    valid, ids = _fleet(settings, 300)
    valid.append((f"{root}/line-a/press-07/temperature", b"71.25"))  # a bare number
    invalid = {
        f"{root}/line-a/press-07/temperature": (b"hello", "INVALID_JSON"),
        f"{root}/line-a/press-07/torque": (b"1", "UNKNOWN_ENUM"),
        f"{root}/line-a/press-07/pressure": (b'{"value": 5, "seq": 1, "ts": 1}', "TOO_OLD"),
        f"{root}/line-a/press-07/level": (b"101", "OUT_OF_RANGE"),
        f"{root}/line-a/Press-07/rpm": (b"10", "BAD_MACHINE_ID"),
        f"{root}/line-a/press-07/flow": (b'{"value": 1, "machine_id": "x"}', "TOPIC_MISMATCH"),
        f"{root}/line-a/press-07/current": (b"", "EMPTY"),
    }
    log = tmp_path / "bridge.log"
    bridge = _bridge(settings, client_id, log, "--until-idle", "3")
    _wait_connected(log, 1, bridge)
    _publish(settings, [*valid[:150], *((t, p) for t, (p, _) in invalid.items()), *valid[150:]])
    summary = drills.summary_of(bridge)

    assert summary["received"] == len(valid) + len(invalid)
    assert summary["acknowledged"] == summary["received"]
    assert summary["not_acknowledged"] == 0
    assert summary["readings"] == len(valid)
    assert summary["dead_letters"] == len(invalid)
    assert summary["dead_letter_reasons"] == Counter(r for _, r in invalid.values())
    assert summary["session_resumed"] is False

    landed = _consume(settings, settings.topics.readings)
    batch = decode_batch([m.value() for m in landed], int(time.time() * 1000), **_window())
    assert batch.rejected == []
    got = batch.valid.column("event_id").to_pylist()
    assert len(got) == len(valid)
    assert ids <= set(got)
    machines = batch.valid.column("machine_id").to_pylist()
    keys = [landed[i].key().decode() for i in batch.valid_index.tolist()]
    assert keys == machines  # key = machine_id: a machine's readings stay in one partition

    dead = _consume(settings, settings.topics.dlq)
    by_topic = {}
    for m in dead:
        header = parse_dlq_headers(m.headers())
        assert header.stage == "mqtt"
        assert (header.partition, header.offset) == (-1, -1)
        by_topic[header.topic] = (m.value(), header.reason, header.detail)
    assert {t: (v, r) for t, (v, r, _) in by_topic.items()} == invalid  # payload unchanged
    assert all(detail for _, _, detail in by_topic.values())


def _window() -> dict[str, int]:
    return {"max_future_ms": 300_000, "max_age_ms": 30 * 86_400_000}


@pytest.mark.slow
def test_bridge_sigkilled_twice_mid_stream_loses_nothing(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    """The broker keeps what the bridge did not acknowledge; the bridge acknowledges only what
    Kafka confirmed. So SIGKILL at any moment loses nothing, and every redelivered copy carries
    the same event_id: the lake holds exactly the published readings once deduplicated."""
    settings = mqtt_isolated
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    messages, ids = _fleet(settings, 30_000, machines=50)
    log = tmp_path / "bridge.log"
    # Small batches: many of them between "received" and "acknowledged" at any moment.
    args = ("--batch-size", "500", "--progress-every", "0.2")
    first = _bridge(settings, client_id, log, *args)
    _wait_connected(log, 1, first)
    publisher = threading.Thread(target=_publish, args=(settings, messages, 6.0), daemon=True)
    publisher.start()
    time.sleep(1.5)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = _bridge(settings, client_id, log, *args)
    _wait_connected(log, 2, second)
    time.sleep(1.5)
    second.send_signal(signal.SIGKILL)
    second.communicate(timeout=30)
    publisher.join(timeout=120)
    assert not publisher.is_alive()
    last = _bridge(settings, client_id, log, "--until-idle", "3")
    summary = drills.summary_of(last)
    assert summary["session_resumed"] is True
    assert summary["not_acknowledged"] == 0

    landed = _consume(settings, settings.topics.readings)
    decoded = decode_batch([m.value() for m in landed], int(time.time() * 1000), **_window())
    event_ids = decoded.valid.column("event_id").to_pylist()
    assert len(set(event_ids)) == len(ids), "distinct event_ids in Kafka != published"
    assert set(event_ids) == ids
    duplicates = len(event_ids) - len(ids)
    # Both kills hit a bridge that was forwarding: each had taken messages from the broker.
    assert [max(_received_by_run(log)[i], default=0) > 0 for i in (0, 1)] == [True, True]
    assert summary["received"] < len(messages)

    # And through the lander into the lake: the same exact set.
    land = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "land", "--until-idle", "3", "--group", "lander"],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert land.returncode == 0, land.stderr[-2000:]
    files = Lake(settings.lake_dir).landed_files()
    lake_ids = [
        i for f in files for i in pq.read_table(f.path, columns=["event_id"])[0].to_pylist()
    ]
    assert len(lake_ids) == len(event_ids)
    assert len(set(lake_ids)) == len(ids), f"{duplicates} duplicates; distinct must equal published"


def _received_by_run(log: Path) -> list[list[int]]:
    """`received` of every progress line, per bridge run (a run starts at its "connected")."""
    runs: list[list[int]] = []
    for line in log.read_text().splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "connected":
            runs.append([])
        elif event.get("event") == "progress" and runs:
            runs[-1].append(int(event["received"]))
    return runs


def test_bridge_stops_on_sigterm_after_acknowledging_what_kafka_confirmed(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    settings = mqtt_isolated
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    messages, _ = _fleet(settings, 2000)
    log = tmp_path / "bridge.log"
    bridge = _bridge(settings, client_id, log)
    _wait_connected(log, 1, bridge)
    _publish(settings, messages)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(
        drills.watermarks(settings, settings.topics.readings)[p][1] for p in range(6)
    ) < len(messages):
        time.sleep(0.1)
    bridge.send_signal(signal.SIGTERM)
    summary = drills.summary_of(bridge)
    assert summary["stopped_by"] == "signal:SIGTERM"
    assert summary["received"] == summary["acknowledged"] == len(messages)
    assert summary["not_acknowledged"] == 0

    # Nothing is left for the session: a new bridge finds no message to take.
    again = _bridge(settings, client_id, log, "--until-idle", "1.5")
    assert drills.summary_of(again)["received"] == 0


def test_a_message_is_not_acknowledged_while_kafka_cannot_confirm_it(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    """With Kafka unreachable, deliveries time out: the bridge acknowledges nothing, the broker
    keeps the messages, and a bridge with a working Kafka later forwards every one."""
    settings = mqtt_isolated
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    messages, ids = _fleet(settings, 200)
    log = tmp_path / "bridge.log"
    with socket.socket() as s:  # a port where no Kafka listens
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    blind = _bridge(
        settings,
        client_id,
        log,
        "--duration",
        "5",
        "--delivery-timeout-ms",
        "1500",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{dead_port}",
    )
    _wait_connected(log, 1, blind)
    _publish(settings, messages)
    out, _ = blind.communicate(timeout=60)
    summary = json.loads(out.strip().splitlines()[-1])
    assert blind.returncode == 1  # Kafka failures: the exit code says so
    assert summary["acknowledged"] == 0
    assert summary["readings"] == 0
    assert summary["kafka_failures"]

    healthy = _bridge(settings, client_id, log, "--until-idle", "3")
    summary = drills.summary_of(healthy)
    assert summary["session_resumed"] is True
    assert summary["redelivered"] > 0
    landed = _consume(settings, settings.topics.readings)
    got = decode_batch([m.value() for m in landed], int(time.time() * 1000), **_window())
    assert set(got.valid.column("event_id").to_pylist()) == ids


def test_stack_mosquitto_keeps_a_persistent_session_across_a_broker_restart(
    tmp_path: Path,
) -> None:
    """The stack's Mosquitto config (persistence on): QoS 1 messages queued for an offline
    persistent session are still delivered after the broker is stopped and started again.
    A private broker on a port of its own, so the shared one is not touched."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = LocalStack(root=tmp_path / "stack", services=("mosquitto",), mqtt_port=port)
    address = MqttAddress("127.0.0.1", port)
    try:
        assert broker.up() == ["mosquitto"]
        assert broker.status() == {"mosquitto": True}
        assert broker.env() == {"MQTT_URL": f"mqtt://127.0.0.1:{port}"}
        session = MqttClient(address, "keeper", clean_start=False, session_expiry=3600)
        assert session.connect() is False
        session.subscribe(["factory/+/+/+"])
        session.disconnect()
        publisher = MqttClient(address, "device")
        publisher.connect()
        publisher.publish_many((f"factory/l/m{i}/level", str(i).encode()) for i in range(500))
        assert publisher.wait_for_acks(10) == 0
        publisher.disconnect()

        assert broker.down(["mosquitto"]) == ["mosquitto"]
        assert broker.status() == {"mosquitto": False}
        assert broker.up() == ["mosquitto"]

        assert session.connect() is True  # the session survived the restart
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 500 and time.monotonic() < deadline:
            batch = session.receive(1000, 0.5)
            session.ack(m.packet_id for m in batch)
            got += batch
        assert sorted(int(m.payload) for m in got) == list(range(500))
        session.disconnect()
    finally:
        broker.down()


def test_stack_env_exports_the_mqtt_url(stack: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "stack", "env"],
        env={**os.environ},
        capture_output=True,
        text=True,
    )
    assert f"export MQTT_URL={stack.mqtt_url}" in result.stdout.splitlines()


SIMULATION = ("--machines", "6", "--hours", "0.1", "--chaos", "heavy", "--seed", "3")


def test_simulated_fleet_over_mqtt_reaches_kafka_through_the_bridge(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    """simulator -> Mosquitto -> bridge -> Kafka: every valid reading arrives (duplicates the
    simulator resends keep their event_id), every malformed one is a dead letter."""
    settings = mqtt_isolated
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    log = tmp_path / "bridge.log"
    # Idle for 8 s: the simulator's own start-up (imports, Kafka probe, topics, metrics
    # endpoint) takes 2-4 s on a loaded machine before its first message.
    bridge = _bridge(settings, client_id, log, "--until-idle", "8")
    _wait_connected(log, 1, bridge)
    simulate = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "simulate", "--sink", "mqtt", *SIMULATION],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert simulate.returncode == 0, simulate.stderr[-2000:]
    sim = json.loads(simulate.stdout.strip().splitlines()[-1])
    summary = drills.summary_of(bridge)

    assert sim["sink"] == "mqtt"
    assert sim["mqtt_published"] == sim["mqtt_acknowledged"] == sim["produced"]
    assert sim["malformed"]["total"] > 0 and sim["duplicates"] > 0
    assert summary["received"] == sim["produced"]
    assert summary["readings"] == sim["readings"]
    assert summary["dead_letters"] == sim["malformed"]["total"]
    assert summary["dead_letter_reasons"] == {
        reason: n
        for reason, n in (
            ("INVALID_JSON", sim["malformed"]["undecodable"]),
            ("OUT_OF_RANGE", sim["malformed"]["out_of_range"]),
            ("UNKNOWN_ENUM", sim["malformed"]["unknown_enum"]),
        )
        if n
    }
    landed = _consume(settings, settings.topics.readings)
    ids = decode_batch([m.value() for m in landed], int(time.time() * 1000), **_window())
    event_ids = ids.valid.column("event_id").to_pylist()
    assert len(event_ids) == sim["readings"]
    assert len(set(event_ids)) == sim["readings"] - sim["duplicates"]


def test_sparkplug_b_births_and_data_reach_kafka(
    mqtt_isolated: Settings, mqtt_sessions: list[str], tmp_path: Path
) -> None:
    """An edge gateway publishes DBIRTH (names, aliases) then DDATA (aliases only) for two
    devices: every numeric contract metric becomes a reading keyed by its device."""
    from streaming.bridge.sparkplug import DOUBLE, Payload

    settings = mqtt_isolated
    group = f"line-{uuid.uuid4().hex[:8]}"
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    mqtt_sessions.append(client_id)
    now = int(time.time() * 1000)

    def body(metrics: list[dict[str, Any]], ts: int) -> bytes:
        message = Payload(timestamp=ts, seq=0)
        for spec in metrics:
            message.metrics.add(**spec)
        return bytes(message.SerializeToString())

    messages: list[Message] = []
    for device in ("pump-1", "pump-2"):
        birth = [
            {"name": "Pump/Flow", "alias": 1, "datatype": DOUBLE, "double_value": 10.0},
            {"name": "Pump/Pressure", "alias": 2, "datatype": DOUBLE, "double_value": 4.0},
            {"name": "Properties/Model", "alias": 3, "datatype": 12, "string_value": "P-9"},
        ]
        messages.append((f"spBv1.0/{group}/DBIRTH/gw-1/{device}", body(birth, now - 10_000)))
        for k in range(50):
            ts = now - 9_000 + k * 100
            data = [
                {"alias": 1, "double_value": 10.0 + k / 10, "timestamp": ts},
                {"alias": 2, "double_value": 4.0 + k / 100, "timestamp": ts},
            ]
            messages.append((f"spBv1.0/{group}/DDATA/gw-1/{device}", body(data, ts)))
    log = tmp_path / "bridge.log"
    bridge = _bridge(settings, client_id, log, "--until-idle", "3", "--sparkplug-group", group)
    _wait_connected(log, 1, bridge)
    _publish(settings, messages)
    summary = drills.summary_of(bridge)

    assert summary["received"] == summary["acknowledged"] == len(messages)
    assert summary["readings"] == 2 * (2 + 50 * 2)
    assert summary["dead_letters"] == 0
    assert summary["sparkplug_skipped_metrics"] == 2  # Properties/Model of each DBIRTH
    landed = _consume(settings, settings.topics.readings)
    batch = decode_batch([m.value() for m in landed], int(time.time() * 1000), **_window())
    rows = batch.valid.to_pylist()
    assert {(r["machine_id"], r["line_id"]) for r in rows} == {
        ("pump-1", group),
        ("pump-2", group),
    }
    assert sorted({r["metric"] for r in rows}) == ["flow", "pressure"]
    assert len({r["event_id"] for r in rows}) == len(rows)
    assert {landed[i].key().decode() for i in batch.valid_index.tolist()} == {"pump-1", "pump-2"}
